//! The services.yaml model, the `${...}` grammar and validation diagnostics.
