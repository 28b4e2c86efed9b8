"""Models: TensorFlow modules exported to builtins-only TFLite training plans (build time only)."""
