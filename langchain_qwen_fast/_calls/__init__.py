"""Call preparation: one call or batch becomes dispatcher items.

The layer under ``chat_models.py``: the field checks (``fields``), parameters merged and the wire chosen
(``request``), ``bind_tools``/``with_structured_output`` (``structured``), the fast batch driver
(``batch``) and the inputs it prepares (``prepare``), and marking a stream's last chunk (``streams``).
It hands items to the loop layer below and never imports the model class.
"""
