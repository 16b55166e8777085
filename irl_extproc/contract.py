"""What the rendered Envoy config and the ext_proc server agree on (one place for both)."""

ROUTE_METADATA_KEY = "x-irl-route"  # gRPC initial metadata set per route by Envoy; clients cannot set it
METADATA_NAMESPACE = "irl"  # Envoy dynamic metadata namespace of IRL's decisions
