"""How Docker and Go read things, shared by request decoding and image trust.

- ``gojson``: JSON read the way Go's ``encoding/json`` decodes it into a struct.
- ``reference``: image references as ``github.com/distribution/reference`` parses them.
- ``ids``: dockerd's object ids.
- ``client``: a small client for dockerd's own API, returning typed views (``views``) of
  its inspect JSON.

Nothing here knows the policy or the plugin's rule ids: errors are this package's own
(``gojson.InvalidJSON``, ``reference.InvalidReference``, ``client.DockerError``), and each
caller says what they mean for it.
"""
