import cProfile, pstats, io
from tests.test_sync_gmail import *  # noqa


def test_prof(gmail, user, connection, objects_dir, monkeypatch):
    ids = [gmail.add(mail(n)) for n in range(90)]
    pr = cProfile.Profile(); pr.enable()
    sync(user, connection, gmail.token)
    pr.disable()
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(35); print(s.getvalue())
    assert 0
