# No promotion without an approver: at least minApprovals (default 1) different people approved the
# rollout (at an approval step, or by promoting it themselves). For the promote gate.
package modelcanary.policies.require_approver

import rego.v1

min_approvals := object.get(input.params, "minApprovals", 1)

approvers := {approval.actor | some approval in object.get(input.rollout, "approvals", [])}

deny contains msg if {
	count(approvers) < min_approvals
	msg := sprintf("no promotion without an approver: %d of %d approvals", [count(approvers), min_approvals])
}

# A count written as text ("2") compares with no number, so the rule above never denied: it denies here.
deny contains msg if {
	not is_number(min_approvals)
	msg := concat("", ["require-approver minApprovals must be a number, got ", json.marshal(min_approvals)])
}

# A parameter this policy does not read (a misspelling: "minApproval" for "minApprovals") denies, naming it: a
# misspelled parameter must not read as its default.
deny contains msg if {
	some key, _ in input.params
	not key in {"minApprovals"}
	msg := concat("", ["require-approver has no parameter ", json.marshal(key), "; it reads minApprovals"])
}
