"""Avatar sessions: provider adapters, gateway-signed tokens and the session guard."""
