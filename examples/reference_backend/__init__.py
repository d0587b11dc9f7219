"""A reference enterprise chat backend: answers from a small product knowledge base.

It speaks the customer-backend contract the gateway forwards to
(``POST /api/chat`` with ``{message, sessionId, context}`` answered by
``{response, sources}``) so a newcomer sees real answers with sources through
the gateway. Run: ``python -m examples.reference_backend --port 9000``.
"""
