# The candidate was trained on data no older than maxAgeDays (default 30) days: its data.as_of tag
# (ISO-8601, or epoch seconds; a number above 1e11 is epoch milliseconds), on the version or its
# run, else its training run's start time. Data dated in the future is denied too (a date typed
# wrong, or one in the wrong unit, must not pass as fresh), beyond clockSkewDays (default 1) of
# clock skew between the training job's clock and the controller's.
package modelcanary.policies.data_freshness

import rego.v1

max_age_days := object.get(input.params, "maxAgeDays", 30)

clock_skew_days := object.get(input.params, "clockSkewDays", 1)

deny contains msg if {
	input.candidate.data_age_days == null
	msg := "the candidate's training data has no known date (tag data.as_of, or a training run)"
}

deny contains msg if {
	age := input.candidate.data_age_days
	age != null
	is_number(max_age_days)
	age > max_age_days
	msg := sprintf("the candidate was trained on data %.1f days old; at most %v allowed", [age, max_age_days])
}

deny contains msg if {
	age := input.candidate.data_age_days
	age != null
	is_number(clock_skew_days) # not, and the rule below names it (0 - true is a run-time error)
	age < 0 - clock_skew_days
	msg := sprintf(
		"the candidate's training data is dated %.1f days in the future (data.as_of %v); clockSkewDays allows %v",
		[0 - age, object.get(input.candidate, "data_as_of_iso", null), clock_skew_days],
	)
}

# A bound that is no number (left empty: null) compares with nothing, so any age passed: it denies here.
deny contains msg if {
	not is_number(max_age_days)
	msg := concat("", ["data-freshness maxAgeDays must be a number of days, got ", json.marshal(max_age_days)])
}

deny contains msg if {
	not is_number(clock_skew_days)
	msg := concat("", ["data-freshness clockSkewDays must be a number of days, got ", json.marshal(clock_skew_days)])
}

# A parameter this policy does not read (a misspelling: "maxAgeDay" for "maxAgeDays") denies, naming it: a
# misspelled parameter must not read as its default.
deny contains msg if {
	some key, _ in input.params
	not key in {"maxAgeDays", "clockSkewDays"}
	msg := concat("", ["data-freshness has no parameter ", json.marshal(key), "; it reads maxAgeDays, clockSkewDays"])
}
