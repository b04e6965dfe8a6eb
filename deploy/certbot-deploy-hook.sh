#!/bin/sh
# certbot deploy hook for tlsedge.service (which runs as the system user/group `tlsedge`).
#
# certbot keeps /etc/letsencrypt/live and /etc/letsencrypt/archive root-only (0700) and writes
# every new privkeyN.pem 0600, so after each issuance or renewal this hook lets group tlsedge
# read the lineage: the live/ and archive/ directories and the lineage's own two directories
# become root:tlsedge 0750, its private keys root:tlsedge 0640. Nothing becomes world-readable,
# and other lineages stay as they are. Then it reloads tlsedge now (tlsedge would also see the
# renewal by itself, through its file watcher, within a second or two).
#
# Install (runs for every certificate certbot issues or renews):
#   install -m 0755 deploy/certbot-deploy-hook.sh /etc/letsencrypt/renewal-hooks/deploy/tlsedge.sh
# or for one certificate: certbot ... --deploy-hook /etc/tlsedge/certbot-deploy-hook.sh
# For a lineage that already exists, run it once by hand:
#   RENEWED_LINEAGE=/etc/letsencrypt/live/example.com /etc/letsencrypt/renewal-hooks/deploy/tlsedge.sh
#
# certbot sets RENEWED_LINEAGE (live/NAME). TLSEDGE_GROUP overrides the group (default tlsedge).
set -eu

group="${TLSEDGE_GROUP:-tlsedge}"
lineage="${RENEWED_LINEAGE:?RENEWED_LINEAGE is not set: run from certbot --deploy-hook, or set it}"

if ! getent group "$group" >/dev/null; then
    echo "certbot-deploy-hook: group $group does not exist (install deploy/systemd/tlsedge.sysusers.conf, run systemd-sysusers)" >&2
    exit 1
fi

# live/NAME/privkey.pem links to ../../archive/NAME/privkeyN.pem: follow it to the archive
# directory, wherever certbot's --config-dir puts it.
key="$(readlink -f "$lineage/privkey.pem")"
archive="$(dirname "$key")"

for dir in "$(dirname "$lineage")" "$lineage" "$(dirname "$archive")" "$archive"; do
    chgrp "$group" "$dir"
    chmod 0750 "$dir"
done
# Every key of the lineage, so tlsedge can also follow a link to an older one mid-renewal.
for file in "$archive"/privkey*.pem; do
    chgrp "$group" "$file"
    chmod 0640 "$file"
done
# Certificates and chains are public; make them group-readable too in case certbot's umask
# made them private.
for file in "$archive"/cert*.pem "$archive"/chain*.pem "$archive"/fullchain*.pem; do
    [ -e "$file" ] || continue
    chgrp "$group" "$file"
    chmod g+r "$file"
done

# Reload if running; nothing if stopped (a stopped tlsedge must not fail certbot's renewal).
exec systemctl try-reload-or-restart tlsedge.service
