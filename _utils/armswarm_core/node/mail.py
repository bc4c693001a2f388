"""The mail relay (msmtp or ssmtp): its configuration files."""

import re

from armswarm_core import ArmswarmError

RELAYS = ("msmtp", "ssmtp")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def render_mail_config(
    relay: str,
    host: str,
    port,
    tls: bool,
    sender: str,
    user: str,
    password: str | None,
    root_alias: str,
) -> dict:
    """``{path: (content, mode)}`` for the relay's files; ArmswarmError naming the argument
    when a value would break a line of them (the password is never shown)."""
    given = {"host": host, "sender": sender, "user": user, "root_alias": root_alias}
    for name, value in (*given.items(), ("password", password or "")):
        if not isinstance(value, str) or _CONTROL.search(value):
            raise ArmswarmError(f"mail_relay: {name} must be a string on one line")
        if name != "password" and " " in value:
            raise ArmswarmError(f"mail_relay: {name} must be one word")
    if relay not in RELAYS:
        raise ArmswarmError(f"mail_relay: relay must be one of {', '.join(RELAYS)}")
    if isinstance(tls, bool) is False:
        raise ArmswarmError("mail_relay: tls must be true or false")
    if isinstance(port, bool) or not str(port).isdigit():
        raise ArmswarmError("mail_relay: port must be a port number")
    if relay == "msmtp":
        lines = [
            "# Managed by Salt (armnode)",
            "defaults",
            f"tls {'on' if tls else 'off'}",
            "tls_trust_file /etc/ssl/certs/ca-certificates.crt",
            "syslog LOG_MAIL",
            "aliases /etc/aliases",
            "",
            "account default",
            f"host {host}",
            f"port {port}",
        ]
        if sender:
            lines.append(f"from {sender}")
        if user:
            lines += ["auth on", f"user {user}"]
            if password:
                lines.append(f"password {password}")
        files = {"/etc/msmtprc": ("\n".join(lines) + "\n", 0o600)}
    else:
        lines = [
            "# Managed by Salt (armnode)",
            f"mailhub={host}:{port}",
            "FromLineOverride=YES",
            f"UseSTARTTLS={'YES' if tls else 'NO'}",
        ]
        if root_alias:
            lines.append(f"root={root_alias}")
        if user:
            lines.append(f"AuthUser={user}")
            if password:
                lines.append(f"AuthPass={password}")
        files = {"/etc/ssmtp/ssmtp.conf": ("\n".join(lines) + "\n", 0o600)}
    if root_alias:
        files["/etc/aliases"] = (
            f"# Managed by Salt (armnode)\nroot: {root_alias}\ndefault: {root_alias}\n",
            0o644,
        )
    return files
