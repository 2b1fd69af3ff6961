"""What the Compose schema cannot say about deploy/compose/compose.yaml: every
depends_on names a service that runs in each profile of the service that waits for it
and has a healthcheck (condition: service_healthy) or is a one-shot step that is not
restarted (condition: service_completed_successfully: restart "no"), and the waits
never loop.

Usage: python3 scripts/check-compose.py deploy/compose/compose.yaml
"""

import sys

import yaml


def main(path):
    services = yaml.safe_load(open(path))["services"]
    failures = []
    for name, service in services.items():
        profiles = set(service.get("profiles", []))
        for need, how in service.get("depends_on", {}).items():
            other = services.get(need)
            if other is None:
                failures.append(f"{name} waits for {need}, which is not a service")
                continue
            missing = profiles - set(other.get("profiles", []))
            if missing:
                failures.append(f"{name} waits for {need}, which does not run in {sorted(missing)}")
            if how.get("condition") == "service_healthy" and "healthcheck" not in other:
                failures.append(f"{name} waits for {need} to be healthy; it has no healthcheck")
            # A one-shot step (a migration) that Compose restarted would never have
            # "completed", and its waiters would never start.
            if how.get("condition") == "service_completed_successfully" and other.get("restart") != "no":
                failures.append(f"{name} waits for {need} to complete; it is not restart: \"no\"")

    done, visiting = set(), set()

    def visit(name, path):
        if name in done:
            return
        if name in visiting:
            failures.append("depends_on loops: " + " -> ".join(path + [name]))
            return
        visiting.add(name)
        for need in services.get(name, {}).get("depends_on", {}):
            visit(need, path + [name])
        visiting.discard(name)
        done.add(name)

    for name in services:
        visit(name, [])
    for failure in failures:
        print(f"{path}: {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"{path}: {len(services)} services, every depends_on in profile, health-checked "
          "or one-shot, and acyclic")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "deploy/compose/compose.yaml"))
