"""Certificates and TLS (SPEC §4 TLS): the operator's CA, issuance, revocation, TLS contexts.

The project's own certificate authority stands in for the national health PKI (IGC-Santé), so
a deployment and its tests run with no outside service; a deployment can add real CA bundles
(``certs.extra_ca_files``) for client and peer verification.

- :mod:`missive.certs.ca`: create the CA, issue server / operator / professional certificates,
  revoke, sign the CRL, export PEM and PKCS#12, check expiry (RFC 5280).
- :mod:`missive.certs.tls`: the ``ssl.SSLContext`` builders every listener and outgoing
  connection uses (TLS 1.2+ only, RFC 8996; client certificates checked against the CAs and the
  CRLs; certificates reloaded when their files change, without a restart).
- :mod:`missive.certs.identity`: read a peer certificate (professional national id ``8``+RPPS,
  operator subject DN) and check a chain against one domain's CA (policy P7).
- :mod:`missive.certs.metrics`: the Prometheus expiry gauges.

Used by the fronts and the CLI only (ARCHITECTURE: ``certs`` is below the fronts, beside the core).
"""
