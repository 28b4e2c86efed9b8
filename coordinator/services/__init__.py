"""Services: the coordinator's logic, free of HTTP. They flush; the caller owns the transaction."""
