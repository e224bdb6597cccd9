"""What every codeindex service shares: config loading, server start-up
(health, reflection, metrics, graceful shutdown), domain errors and the
generated protobuf stubs."""
