from pathlib import Path

import yaml


def test_cluster_yaml_passes_rays_own_schema():
    import json

    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((Path(__file__).parents[1] / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)  # raises jsonschema.ValidationError on any mistake
    assert config["provider"]["type"] == "aws"
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["CPU"] == 0  # no trials on the head
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert any(t["node_config"]["InstanceType"].startswith(("g", "p")) and t["max_workers"] > 0 for t in workers)
    assert any("pip install -e" in c for c in config["setup_commands"])
    assert all("--dashboard-host=0.0.0.0" not in c for c in config["head_start_ray_commands"])
