"""A local SMTP server (aiosmtpd, from PyPI) that alert email is sent to in tests, independent of
GenGate's own SMTP client.

    python3 smtp_receiver.py PORT_FILE CERT KEY USER PASSWORD

Listens on localhost (a free port, written to PORT_FILE) with STARTTLS required (CERT and KEY,
PEM) and AUTH required (USER, PASSWORD), and prints one JSON line per message: the envelope
sender and recipients, whether the session was under TLS and who logged in, and the message's
subject and text.
"""
import asyncio
import email
import email.policy
import json
import os
import socket
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port_file, cert, key, user, password = sys.argv[1:6]


class Handler:
    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        print(json.dumps({
            "from": envelope.mail_from, "to": envelope.rcpt_tos, "tls": session.ssl is not None,
            "user": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
            "subject": str(message["subject"]), "body": message.get_content().replace("\r\n", "\n"),
        }), flush=True)
        return "250 OK"


def authenticate(server, session, envelope, mechanism, auth_data):
    good = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user \
        and auth_data.password.decode() == password
    # handled=False: aiosmtpd answers a failure itself (535).
    return AuthResult(success=good, handled=False, auth_data=auth_data)


with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
controller = Controller(
    Handler(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
    authenticator=authenticate, auth_require_tls=True, server_hostname="localhost")
controller.start()
with open(port_file + ".tmp", "w") as handle:
    handle.write(str(port))
os.replace(port_file + ".tmp", port_file)
try:
    asyncio.run(asyncio.Event().wait())
except KeyboardInterrupt:
    pass
finally:
    controller.stop()
