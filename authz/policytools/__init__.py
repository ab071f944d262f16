"""Tools for the security teams who own the policy: lint, test, explain, replay
(``pyauthz policy ...``). They sit beside the decision path and drive it as dockerd would
(``authz.plugin.Plugin``), never a copy of it."""
