"""TensorFlow Federated as the FedAvg oracle (``make oracle``; docs/oracle.md)."""
