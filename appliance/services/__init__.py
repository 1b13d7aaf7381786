"""Use cases shared by the CLI, the API and the console. Each service takes its
dependencies (store, secrets) in its constructor; none reads global state."""
