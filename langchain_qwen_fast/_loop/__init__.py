"""The background event loop and the way from any caller to it.

``runtime`` owns the one loop thread; ``bridge`` carries a batch's items there and results back to a
blocking thread or another event loop; ``handle`` is an instance's hold on a shared dispatcher;
``run_batch`` runs any runnable's ``abatch`` on that loop.
"""
