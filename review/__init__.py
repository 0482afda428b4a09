"""The review domain: queues, leases, decisions, triage, second review, agreement, similarity
and accounts, without any web framework.

``cards`` serves cards (the queue of cards and its leases, card details, blind second reviews),
``decisions`` records them (decide, undo, changes), ``thumbnails`` serves their pictures,
``errors`` holds the errors they raise, ``queues`` the queue orders' names and the measured default,
``triage`` the grid of N cards decided at a glance, ``second_review`` blind second looks and a
lead's adjudication, ``agreement`` agreement and pace between reviewers (pure), ``similar`` "more
like this" (nearest cells in the embedding space), ``accounts`` accounts and roles. It works on
what ``pipeline`` produced (scores, embeddings, year mosaics) through ``db.store``; the web app
(``labeller``), the CLI and a simulated reviewer (``simulation``) all call these functions.
"""
