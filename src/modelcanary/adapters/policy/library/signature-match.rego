# The candidate's input signature is identical to the baseline's (the same columns, types and
# order), so requests that fit the baseline fit the candidate: feature skew caught at the schema.
# Params: outputs (default false) also compares the output signatures.
package modelcanary.policies.signature_match

import rego.v1

# Null as well as missing: a model logged without a signature has "signature": null, and null is
# truthy in Rego, so `not input[role].signature` would let it through.
deny contains msg if {
	some role in ["baseline", "candidate"]
	object.get(input[role], "signature", null) == null
	msg := sprintf("the %s has no model signature to compare", [role])
}

deny contains msg if {
	input.baseline.signature.inputs != input.candidate.signature.inputs
	msg := sprintf("input signature differs from the baseline's: baseline %v, candidate %v", [
		[sprintf("%v:%v", [c.name, c.type]) | some c in input.baseline.signature.inputs],
		[sprintf("%v:%v", [c.name, c.type]) | some c in input.candidate.signature.inputs],
	])
}

deny contains msg if {
	object.get(input.params, "outputs", false)
	input.baseline.signature.outputs != input.candidate.signature.outputs
	msg := "output signature differs from the baseline's"
}
