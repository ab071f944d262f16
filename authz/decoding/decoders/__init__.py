"""Decoders: one function per endpoint whose content matters, named in the route table
(``routes.py``). Each reads the request as dockerd will (Go JSON, query values) and fills
``Findings``: facts from the body, images, and what must still be read through dockerd."""
