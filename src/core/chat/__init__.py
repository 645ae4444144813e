"""The turn: begin_turn (checks, the lease, the user message) and the agent loop."""
