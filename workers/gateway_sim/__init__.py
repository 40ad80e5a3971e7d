"""The gateway simulator: a real HTTP gateway with fault injection.

``flowpay serve-gateway-sim`` stands for the external card gateway in development, tests and
benchmarks. Modules: ``app`` (the FastAPI routes and how faults shape an answer), ``faults``
(the seeded fault model), ``store``/``writer``/``db`` (charges and refunds in SQLite, written
with group commit), ``schemas`` (request bodies), ``errors``, ``stats``, ``server`` (uvicorn).
It imports only ``workers.core``: it plays a system FlowPay does not own.
"""
