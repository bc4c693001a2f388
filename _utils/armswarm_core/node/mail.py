"""The mail relay (msmtp or ssmtp): its configuration files."""

RELAYS = ("msmtp", "ssmtp")


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
    """``{path: (content, mode)}`` for the relay's files."""
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
