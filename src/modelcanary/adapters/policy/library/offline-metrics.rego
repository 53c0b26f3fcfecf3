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
