"""Build hook: generate the ext_proc classes from the pinned Envoy binary at build time."""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithProtos(build_py):
    def run(self) -> None:
        spec = importlib.util.spec_from_file_location("protogen", Path("irl_extproc/protogen.py"))
        assert spec and spec.loader
        protogen = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(protogen)
        protogen.generate(Path("irl_extproc"))  # into the source tree, so editable installs see it too
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
