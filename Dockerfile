# One image for every FlowPay role: `docker run IMAGE <flowpay subcommand>`.
# Configure it with FLOWPAY_* environment variables (see flowpay.toml.example).

# --- build: install the package and its dependencies into a self-contained venv ---------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# pyproject force-includes schema.sql into the wheel; README.md is the package readme.
COPY pyproject.toml README.md schema.sql ./
COPY workers/ workers/
COPY flowpay_cli/ flowpay_cli/
RUN pip install .

# --- runtime: the venv only, run by an unprivileged user ---------------------------------------
FROM python:3.11-slim AS runtime

# A container's log is read by machines: one JSON object a line (FLOWPAY_LOG_FORMAT=text to read).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FLOWPAY_LOG_FORMAT=json \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 flowpay \
    && useradd --system --uid 10001 --gid flowpay --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin flowpay \
    && mkdir /app \
    && chown flowpay:flowpay /app

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

# serve-api and serve-gateway-sim (when started with --port 8000 / --port 8100).
EXPOSE 8000 8100

ENTRYPOINT ["flowpay"]
CMD ["--help"]
