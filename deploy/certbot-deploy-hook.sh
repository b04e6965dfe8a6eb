#!/bin/sh
# Optional certbot deploy hook. tlsedge watches the certificate directories itself, so a renewal
# is picked up without any hook; this hook only makes the reload immediate and logged.
#   certbot renew --deploy-hook /etc/tlsedge/certbot-deploy-hook.sh
exec systemctl reload tlsedge
