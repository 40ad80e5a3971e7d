"""`flowpay top`: gathering (``gather``) apart from rendering (``view``)."""
