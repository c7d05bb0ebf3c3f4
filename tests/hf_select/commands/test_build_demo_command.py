from hf_select.cli import main, parse_configs
from hf_select.commands import build_demo as command


def test_build_demo_parses_and_builds(tmp_path, monkeypatch, capsys):
    (args,) = parse_configs(command.CONFIG_CLASSES, ["--cache_dir", str(tmp_path), "--quick"], prog="x")
    assert args.quick and args.cache_dir == str(tmp_path) and args.vocab_size == 8192
    calls = []

    def fake_build(world_dir, download_dir, config):
        calls.append((world_dir, download_dir, config.quick))
        return {"origin": "quick world", "pretrain": {"domains": {"code": {"documents": 1, "chars": 5}}}}

    monkeypatch.setattr("hf_select.dataset_scripts.demo_world.build_world", fake_build)
    assert main(["build-demo", "--cache_dir", str(tmp_path), "--quick"]) == 0
    assert calls == [(tmp_path / "world-quick", tmp_path / "downloads", True)]
    assert '"origin": "quick world"' in capsys.readouterr().out
