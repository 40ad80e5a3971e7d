"""The ``flowpay`` operator CLI: thin commands over the services' own modules."""
