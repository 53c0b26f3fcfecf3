# The candidate's offline metrics (logged on its training run) are no worse than the baseline's by
# more than a margin. Params: metrics (names to compare; default: every metric both runs logged),
# margin (absolute, default 0), lowerIsBetter (names where less is better, e.g. log_loss, rmse).
# A metric the candidate did not log, but the params name, denies, as does one that is not a finite
# number; one the baseline lacks is skipped.
package modelcanary.policies.offline_metrics

import rego.v1

margin := object.get(input.params, "margin", 0)

lower_is_better := {name | some name in object.get(input.params, "lowerIsBetter", [])}

compared contains name if {
	some name in input.params.metrics
}

compared contains name if {
	not input.params.metrics
	some name, _ in input.candidate.metrics
	input.baseline.metrics[name]
}

deny contains msg if {
	some name in compared
	not input.candidate.metrics[name]
	msg := sprintf("the candidate's run logged no %s metric", [name])
}

# A value that is not a number (null: a NaN or an infinity reaches a policy so) cannot be compared
# by the rules below; it is denied here.
deny contains msg if {
	some name in compared
	value := input.candidate.metrics[name]
	not is_number(value)
	msg := sprintf("the candidate's %s metric is %v, not a finite number", [name, value])
}

deny contains msg if {
	some name in compared
	not lower_is_better[name]
	candidate := input.candidate.metrics[name]
	is_number(candidate)
	baseline := input.baseline.metrics[name]
	candidate < baseline - margin
	msg := sprintf("offline %s is %v, below the baseline's %v by more than %v", [name, candidate, baseline, margin])
}

deny contains msg if {
	some name in compared
	lower_is_better[name]
	candidate := input.candidate.metrics[name]
	is_number(candidate)
	baseline := input.baseline.metrics[name]
	candidate > baseline + margin
	msg := sprintf("offline %s is %v, above the baseline's %v by more than %v", [name, candidate, baseline, margin])
}

is_names(value) if {
	is_array(value)
	every item in value {
		is_string(item)
	}
}

# metrics or lowerIsBetter given as one name, not a list, compared nothing or compared a metric the
# wrong way round; a margin that is no number compared nothing: each denies here.
deny contains msg if {
	"metrics" in object.keys(input.params)
	not is_names(input.params.metrics)
	msg := concat("", ["offline-metrics metrics must be a list of metric names, got ", json.marshal(input.params.metrics)])
}

deny contains msg if {
	"lowerIsBetter" in object.keys(input.params)
	not is_names(input.params.lowerIsBetter)
	msg := concat("", [
		"offline-metrics lowerIsBetter must be a list of metric names, got ",
		json.marshal(input.params.lowerIsBetter),
	])
}

deny contains msg if {
	not is_number(margin)
	msg := concat("", ["offline-metrics margin must be a number, got ", json.marshal(margin)])
}

# A parameter this policy does not read (a misspelling: "metric" for "metrics") denies, naming it: a
# misspelled parameter must not read as its default.
deny contains msg if {
	some key, _ in input.params
	not key in {"metrics", "margin", "lowerIsBetter"}
	msg := concat("", ["offline-metrics has no parameter ", json.marshal(key), "; it reads metrics, margin, lowerIsBetter"])
}
