# A change freeze: nothing moves during the given windows (RFC 3339 start and end, with an optional
# reason) or on the given UTC weekdays (e.g. ["Friday", "Saturday", "Sunday"], in any case). The
# clock is the gate's input.now, not the wall clock, so a decision replays. A freeze written wrong
# (a weekday that is not a day's full English name, a window without a start or an end) denies,
# naming what is wrong: a misspelled freeze must never read as no freeze.
package modelcanary.policies.change_freeze

import rego.v1

# Work-arounds for rego-cpp 1.5 (regopy): parse_rfc3339_ns leaves "...Z" undefined, time.weekday can
# crash the process when numpy is loaded, and % is wrong for some operands (20094 % 7 gives 6). So UTC
# is spelled out, and the weekday is counted from the epoch (a Thursday) with floor, not %. And
# sprintf quotes a string a built-in made (json.marshal, concat, object.get's default) when the
# format has other text, which breaks the answer: such messages are built with concat.
ns(t) := time.parse_rfc3339_ns(replace(t, "Z", "+00:00"))

now_ns := round(input.now * 1000000000)

days := ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]

epoch_day := floor(input.now / 86400) + 4

weekday := days[epoch_day - 7 * floor(epoch_day / 7)]

weekdays := object.get(input.params, "weekdays", [])

windows := object.get(input.params, "windows", [])

lower_days := {lower(day) | some day in days}

is_weekday(value) if {
	is_string(value)
	lower_days[lower(value)]
}

is_window(value) if {
	is_object(value)
	is_string(object.get(value, "start", null))
	is_string(object.get(value, "end", null))
}

deny contains msg if {
	some window in windows
	is_window(window)
	ns(window.start) <= now_ns
	now_ns < ns(window.end)
	msg := concat("", ["change freeze (", reason(window), ") until ", window.end])
}

reason(window) := window.reason if is_string(window.reason)

reason(window) := json.marshal(window.reason) if not is_string(window.reason)

reason(window) := "in force" if not "reason" in object.keys(window)

deny contains msg if {
	some frozen in weekdays
	is_weekday(frozen)
	lower(frozen) == lower(weekday)
	msg := sprintf("no changes on %s (UTC)", [weekday])
}

deny contains msg if {
	some frozen in weekdays
	not is_weekday(frozen)
	msg := concat("", [
		"change-freeze weekdays: ", json.marshal(frozen), " is not a weekday; write one of ",
		concat(", ", days), " (any case)",
	])
}

deny contains msg if {
	not is_array(weekdays)
	msg := concat("", ["change-freeze weekdays must be a list of weekday names, got ", json.marshal(weekdays)])
}

deny contains msg if {
	not is_array(windows)
	msg := concat("", ["change-freeze windows must be a list of {start, end, reason}, got ", json.marshal(windows)])
}

deny contains msg if {
	is_array(windows)
	some index, window in windows
	not is_window(window)
	msg := concat("", [
		"change-freeze windows[", format_int(index, 10), "] needs a start and an end (RFC 3339 times), got ",
		json.marshal(window),
	])
}

# An overnight window written with its end before its start covered no time at all: it denies here.
deny contains msg if {
	some window in windows
	is_window(window)
	ns(window.end) <= ns(window.start)
	msg := concat("", ["change-freeze window ", json.marshal(window), ": its end is not after its start"])
}

# A parameter this policy does not read (a misspelling: "window" for "windows") denies, naming it: a
# misspelled parameter must not read as its default.
deny contains msg if {
	some key, _ in input.params
	not key in {"windows", "weekdays"}
	msg := concat("", ["change-freeze has no parameter ", json.marshal(key), "; it reads windows, weekdays"])
}
