"""MkDocs hook: the server page's route table is made from the app's own OpenAPI schema at build time, so it cannot
drift from the code (`<!-- openapi -->` in server.md is replaced by it)."""
import tempfile

MARKER = "<!-- openapi -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    from infolens.serve.app import ServeConfig, create_app

    with tempfile.TemporaryDirectory() as state:
        schema = create_app(ServeConfig(state_dir=state)).openapi()
    rows = ["| method | path | what |", "|---|---|---|"]
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            what = " ".join((op.get("description") or op.get("summary") or "").split())
            rows.append(f"| `{method.upper()}` | `{path}` | {what} |")
    title = f"OpenAPI {schema['openapi']}, {schema['info']['title']} {schema['info']['version']}"
    return markdown.replace(MARKER, f"{title}:\n\n" + "\n".join(rows))
