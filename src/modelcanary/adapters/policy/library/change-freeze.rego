# A change freeze: nothing moves during the given windows (RFC 3339 start and end, with an optional
# reason) or on the given UTC weekdays (e.g. ["Friday", "Saturday", "Sunday"]). The clock is the
# gate's input.now, not the wall clock, so a decision replays.
package modelcanary.policies.change_freeze

import rego.v1

# Work-arounds for rego-cpp 1.5 (regopy): parse_rfc3339_ns leaves "...Z" undefined, time.weekday can
# crash the process when numpy is loaded, and % is wrong for some operands (20094 % 7 gives 6). So UTC
# is spelled out, and the weekday is counted from the epoch (a Thursday) with floor, not %.
ns(t) := time.parse_rfc3339_ns(replace(t, "Z", "+00:00"))

now_ns := round(input.now * 1000000000)

days := ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]

epoch_day := floor(input.now / 86400) + 4

weekday := days[epoch_day - 7 * floor(epoch_day / 7)]

deny contains msg if {
	some window in object.get(input.params, "windows", [])
	ns(window.start) <= now_ns
	now_ns < ns(window.end)
	msg := sprintf("change freeze (%s) until %s", [object.get(window, "reason", "in force"), window.end])
}

deny contains msg if {
	some frozen in object.get(input.params, "weekdays", [])
	frozen == weekday
	msg := sprintf("no changes on %s (UTC)", [weekday])
}
