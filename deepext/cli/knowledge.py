"""`deepext kb ...`: create and list knowledge bases, add documents to them, search them.

deepext kb create handbook -p demo
deepext kb add handbook docs/*.md manual.pdf -p demo
deepext kb search handbook "how do I rotate my token?" -k 3
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from deepext.cli.common import ProjectOption, actor, err, open_platform, out, print_json, print_table, reports_errors
from deepext.errors import DeepextError, InvalidInput

kb_app = typer.Typer(help="Knowledge bases: documents searched by meaning, for RAG chat.", no_args_is_help=True)


@kb_app.command("create")
@reports_errors
def kb_create(
    name: str = typer.Argument(..., help="Knowledge base name in the project."),
    project: str = ProjectOption,
    description: str = typer.Option("", "--description", "-d"),
    embedding_model: str = typer.Option("all-MiniLM-L6-v2", "--embedding-model", help="Local embedding model."),
) -> None:
    """Create an empty knowledge base."""
    from deepext.knowledge.bases import create_knowledge_base

    view = create_knowledge_base(
        open_platform(),
        project=project,
        name=name,
        description=description,
        embedding_model_name=embedding_model,
        actor=actor(),
    )
    out.print(f"created knowledge base {project}/{view.name} ({view.embedding_model}, {view.dimension} dimensions)")


@kb_app.command("list")
@reports_errors
def kb_list(project: str = ProjectOption) -> None:
    """The project's knowledge bases with their document and chunk counts."""
    from deepext.knowledge.bases import list_knowledge_bases

    rows = [
        [kb.name, str(kb.documents), str(kb.chunks), kb.embedding_model, kb.description]
        for kb in list_knowledge_bases(open_platform(), project)
    ]
    print_table(["name", "documents", "chunks", "embedding model", "description"], rows)


@kb_app.command("add")
@reports_errors
def kb_add(
    name: str = typer.Argument(..., help="Knowledge base name."),
    files: list[Path] = typer.Argument(..., help="Documents: .txt, .md or .pdf files."),
    project: str = ProjectOption,
    replace: bool = typer.Option(False, "--replace", help="Replace documents of the same name."),
) -> None:
    """Add documents (the same content again is skipped); every file is tried, failures listed."""
    from deepext.knowledge.bases import add_document

    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise InvalidInput(f"not a file: {', '.join(missing)}", field="files")
    platform = open_platform()
    added = skipped = 0
    failed: list[str] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("adding", total=len(files))
        for path in files:
            progress.update(task, description=f"adding {path.name}")
            try:
                outcome = add_document(
                    platform,
                    project=project,
                    knowledge_base=name,
                    name=path.name,
                    data=path.read_bytes(),
                    actor=actor(),
                    replace=replace,
                )
            except DeepextError as exc:
                failed.append(f"{path}: {exc}")
            else:
                added += outcome.created
                skipped += not outcome.created
                count = outcome.document.chunk_count
                state = f"{count} chunk{'' if count == 1 else 's'}" if outcome.created else "already there"
                progress.console.print(f"{path.name}: {state}", highlight=False)
            progress.advance(task)
    out.print(f"{added} added, {skipped} already there, {len(failed)} failed")
    for line in failed:
        err.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@kb_app.command("search")
@reports_errors
def kb_search(
    name: str = typer.Argument(..., help="Knowledge base name."),
    query: str = typer.Argument(..., help="What to look for, in your own words."),
    project: str = ProjectOption,
    k: int = typer.Option(5, "-k", help="How many chunks."),
    as_json: bool = typer.Option(False, "--json", help="Print the hits as JSON."),
) -> None:
    """The chunks closest in meaning to QUERY, best first."""
    from deepext.knowledge.bases import search

    hits = search(open_platform(), project=project, knowledge_base=name, query=query, k=k)
    if as_json:
        print_json([dataclasses.asdict(hit) for hit in hits])
        return
    if not hits:
        out.print("no matches")
    for n, hit in enumerate(hits, start=1):
        out.print(f"[bold][{n}] {hit.document}[/] chunk {hit.chunk}, score {hit.score:.3f}", highlight=False)
        out.print(hit.text.strip(), highlight=False, markup=False)
        out.print()


@kb_app.command("delete")
@reports_errors
def kb_delete(
    name: str = typer.Argument(..., help="Knowledge base name."),
    project: str = ProjectOption,
    document: str = typer.Option("", "--document", help="Delete only this document."),
) -> None:
    """Delete a knowledge base (or, with --document, one of its documents)."""
    from deepext.knowledge.bases import delete_document, delete_knowledge_base

    platform = open_platform()
    if document:
        delete_document(platform, project=project, knowledge_base=name, name=document, actor=actor())
        out.print(f"deleted {document} from {project}/{name}")
    else:
        delete_knowledge_base(platform, project=project, name=name, actor=actor())
        out.print(f"deleted knowledge base {project}/{name}")
