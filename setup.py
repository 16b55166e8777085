"""Build hook: generate the ext_proc classes from the pinned Envoy binary at build time."""

import importlib.util
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildWithProtos(build_py):
    def run(self) -> None:
        spec = importlib.util.spec_from_file_location("protogen", Path("irl_extproc/protogen.py"))
        assert spec
        assert spec.loader
        protogen = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(protogen)
        protogen.generate(Path("irl_extproc"))  # into the source tree, so editable installs see it too
        # Packages were discovered before the generated ones existed: add them, or a wheel lacks them.
        generated = find_packages(include=["irl_extproc._gen", "irl_extproc._gen.*"])
        self.packages = sorted({*(self.packages or ()), *generated})
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
