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
