"""Serves a directory over HTTP on a free port of 127.0.0.1, for image-URL tests.

    serve_images.py PORT_FILE DIRECTORY

Writes the port to PORT_FILE once listening; serves until killed.
"""

import functools
import http.server
import sys

port_file, directory = sys.argv[1], sys.argv[2]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
with open(port_file, "w") as out:
    out.write(str(server.server_address[1]))
server.serve_forever()
