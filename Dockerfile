# One image for every FlowPay role: `docker run IMAGE <flowpay subcommand>`.
# Configure it with FLOWPAY_* environment variables (see flowpay.toml.example).

# --- build: the locked dependencies and the package, into a self-contained venv ----------------
FROM python:3.11-slim AS build

# uv installs exactly what uv.lock pins, each file checked against its hash, and refuses a lock
# that pyproject.toml no longer matches. Its version is the one pyproject.toml requires.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
RUN pip install uv==0.13.9

WORKDIR /src
# The dependencies first: a layer that changes only with the lock.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-install-project --no-editable
# README.md is the package readme; the migrations are package data under workers/.
COPY README.md ./
COPY workers/ workers/
COPY flowpay_cli/ flowpay_cli/
RUN uv sync --locked --no-editable

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
