from medtl.cli import main

# guarded: the executor's worker processes start by spawn, which imports this module again
if __name__ == "__main__":
    raise SystemExit(main())
