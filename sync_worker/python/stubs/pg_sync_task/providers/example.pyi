# Provider example: an HMAC-SHA256 signature made with the EXAMPLE_KEY secret.
def example_sign(payload: str | bytes) -> str:
    """Hex HMAC-SHA256 of `payload` with the project's EXAMPLE_KEY secret."""
