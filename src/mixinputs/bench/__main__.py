"""``python -m mixinputs.bench``: one bench engine process (the child side of
``mixinputs.bench.child_engine``'s protocol); the bench itself is ``mixinputs bench``."""

from mixinputs.bench.engine_process import serve_engine

if __name__ == "__main__":
    serve_engine()
