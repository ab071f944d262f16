# pyauthz as a container image. dockerd refuses to start while a configured authorization
# plugin does not answer, so run this container with a runtime that does not depend on
# that dockerd (for example containerd's ctr, or podman), or run `pyauthz serve` on the host.
FROM python:3.11-slim
WORKDIR /opt/pyauthz
COPY pyproject.toml README.md ./
COPY authz ./authz
RUN pip install --no-cache-dir .
COPY policies /etc/pyauthz/policies
# The socket dockerd finds the plugin on. Also bind-mount dockerd's own socket
# (-v /var/run/docker.sock:/var/run/docker.sock): image checks and start re-checks read it.
VOLUME ["/run/docker/plugins"]
ENTRYPOINT ["pyauthz", "serve", "--policy", "/etc/pyauthz/policies", \
            "--socket", "/run/docker/plugins/pyauthz.sock"]
