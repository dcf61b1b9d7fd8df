#!/bin/sh
# Run an agent container with no network; its 127.0.0.1:11434 is the host's Ollama
# through bridge-guest and this sandbox's bridge-host socket.
#
#   deploy/docker/run-agent.sh SOCKET_DIR IMAGE [COMMAND [ARGS]...]
#
# SOCKET_DIR is the directory of the sandbox's socket on the host, e.g.
# /run/ollama-bridge/automation (bridge-host's `listen = "unix:/run/ollama-bridge/automation/ollama.sock"`).
# IMAGE is built with deploy/docker/Dockerfile (bridge-guest as entrypoint).
# Set ENGINE=podman to use Podman (same flags).
set -eu
[ $# -ge 2 ] || { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }
sock_dir=$1 image=$2
shift 2
[ -d "$sock_dir" ] || { echo "run-agent: $sock_dir does not exist: is bridge-host listening there?" >&2; exit 66; }
# --network none: no interfaces but loopback. Mount the DIRECTORY, not the socket file: a
# restarted bridge-host creates a new socket inode, which only the directory mount shows.
# The container's user must match the socket's socket_owner/socket_mode (--user).
exec "${ENGINE:-docker}" run --rm -i \
  --network none \
  --read-only --tmpfs /tmp \
  --cap-drop ALL --security-opt no-new-privileges \
  --user "${AGENT_UID:-$(id -u)}:${AGENT_GID:-$(id -g)}" \
  -v "$sock_dir:/run/ollama-bridge" \
  "$image" "$@"
