# The candidate was trained on data no older than maxAgeDays (default 30) days: its data.as_of tag
# (ISO-8601 or epoch seconds, on the version or its run), else its training run's start time.
package modelcanary.policies.data_freshness

import rego.v1

max_age_days := object.get(input.params, "maxAgeDays", 30)

deny contains msg if {
	input.candidate.data_age_days == null
	msg := "the candidate's training data has no known date (tag data.as_of, or a training run)"
}

deny contains msg if {
	age := input.candidate.data_age_days
	age != null
	age > max_age_days
	msg := sprintf("the candidate was trained on data %.1f days old; at most %v allowed", [age, max_age_days])
}
