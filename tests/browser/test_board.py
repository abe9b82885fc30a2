"""The example's live board in Chromium: rows changed by any writer (psql, the ORM's
``queryset.update()``, the page's own CRUD actions) show on the page without a reload, each
user sees only their own tasks, and the detail pane follows its row.

Delivery differs by mode, so the board, psql and two-user tests run in both; the page's own
features (detail pane, CRUD, ``queryset.update()``) run once (``ONE_MODE``), to stay fast."""

from __future__ import annotations

import pytest
from tasks.models import Task

from .conftest import (
    ONE_MODE,
    PLAYWRIGHT_MISSING,
    WAIT_MS,
    card,
    expect_board,
    insert_task,
    rows_of,
)

expect = pytest.importorskip("playwright.sync_api", reason=PLAYWRIGHT_MISSING).expect
pytestmark = pytest.mark.django_db(transaction=True)


def project_pks(project) -> set[int]:
    return set(Task.objects.filter(project=project).values_list("pk", flat=True))


def test_board_shows_the_users_tasks_in_their_columns(open_board, make_account, psql):
    ada = make_account("ada", projects=("Garden", "Kitchen"))
    garden, kitchen = ada.projects
    seeds = insert_task(psql, garden, "Water the roses")
    insert_task(psql, garden, "Prune the pear tree", done=True)
    insert_task(psql, kitchen, "Descale the kettle")

    page = open_board(ada)

    expect_board(page, rows_of(psql, ada))
    expect(card(page, seeds).locator('[data-testid="task-project"]')).to_have_text(
        "Garden", timeout=WAIT_MS
    )
    expect(card(page, seeds)).to_have_attribute("data-done", "false", timeout=WAIT_MS)
    expect(page.locator("#psql-hint")).to_be_visible(timeout=WAIT_MS)

    # one column per project: the cards move by their project
    page.locator("label[for=group-by-project]").click()
    expect(page.locator("#board")).to_have_attribute("data-group-by", "project", timeout=WAIT_MS)
    for project in ada.projects:
        titles = page.locator(
            f'#column-project-{project.pk} [data-testid="task-card"] [data-testid="task-title"]'
        )
        wanted = [title for pk, title, _ in rows_of(psql, ada) if pk in project_pks(project)]
        expect(titles).to_have_text(wanted, timeout=WAIT_MS)
    expect(page.locator(f"#column-project-{garden.pk} [data-testid=column-name]")).to_have_text(
        "Garden", timeout=WAIT_MS
    )


def test_psql_changes_show_live(open_board, make_account, psql):
    ada = make_account("ada")
    (home,) = ada.projects
    bread = insert_task(psql, home, "Buy bread")
    milk = insert_task(psql, home, "Buy milk")
    page = open_board(ada)
    page.evaluate("window.__marker = 1")
    expect_board(page, rows_of(psql, ada))

    # markup in a row is text on the page
    psql.execute("UPDATE tasks_task SET title = 'Buy <b>rye</b> bread' WHERE id = %s", [bread])
    expect(card(page, bread).locator('[data-testid="task-title"]')).to_have_text(
        "Buy <b>rye</b> bread", timeout=WAIT_MS
    )
    expect(card(page, bread).locator("b")).to_have_count(0, timeout=WAIT_MS)

    psql.execute("UPDATE tasks_task SET done = true WHERE id = %s", [milk])
    expect(card(page, milk, "done")).to_have_attribute("data-done", "true", timeout=WAIT_MS)
    expect(card(page, milk, "open")).to_have_count(0, timeout=WAIT_MS)

    eggs = insert_task(psql, home, "Buy eggs")
    expect(card(page, eggs, "open")).to_have_count(1, timeout=WAIT_MS)

    psql.execute("DELETE FROM tasks_task WHERE id = %s", [bread])
    expect(card(page, bread)).to_have_count(0, timeout=WAIT_MS)

    expect_board(page, rows_of(psql, ada))
    assert page.evaluate("window.__marker") == 1  # live: no reload


@ONE_MODE
def test_queryset_update_shows(open_board, make_account, psql):
    ada = make_account("ada")
    (home,) = ada.projects
    pks = [insert_task(psql, home, f"Letter {n}") for n in range(3)]
    page = open_board(ada)
    expect_board(page, rows_of(psql, ada))

    Task.objects.filter(project=home, pk__in=pks[:2]).update(done=True)
    for pk in pks[:2]:
        expect(card(page, pk, "done")).to_have_count(1, timeout=WAIT_MS)

    Task.objects.filter(pk=pks[2]).update(title="Letter to the council")
    expect(card(page, pks[2]).locator('[data-testid="task-title"]')).to_have_text(
        "Letter to the council", timeout=WAIT_MS
    )
    expect_board(page, rows_of(psql, ada))


def test_two_users_see_only_their_own_tasks(open_board, make_account, psql):
    ada = make_account("ada")
    bob = make_account("bob")
    ada_task = insert_task(psql, ada.projects[0], "Quokka survey")
    bob_task = insert_task(psql, bob.projects[0], "Zanzibar trip")
    # Each page records whether the other's word ever shows in it or reaches its sockets.
    ada_page = open_board(ada, never_shows=("Zanzibar",))
    bob_page = open_board(bob, never_shows=("Quokka",))
    expect_board(ada_page, rows_of(psql, ada))
    expect_board(bob_page, rows_of(psql, bob))

    # Bob's rows change and grow; then a change of Ada's own, which reaches her page after
    # anything about Bob's rows would have (one socket, commit order).
    rename = "UPDATE tasks_task SET title = %s WHERE id = %s"
    psql.execute(rename, ["Zanzibar trip, booked", bob_task])
    bob_new = insert_task(psql, bob.projects[0], "Zanzibar visa")
    psql.execute(rename, ["Quokka survey, revised", ada_task])

    expect(card(ada_page, ada_task).locator('[data-testid="task-title"]')).to_have_text(
        "Quokka survey, revised", timeout=WAIT_MS
    )
    expect(card(bob_page, bob_new)).to_have_count(1, timeout=WAIT_MS)
    expect_board(ada_page, rows_of(psql, ada))
    expect_board(bob_page, rows_of(psql, bob))
    assert open_board.leaks(ada_page) == {"shown": [], "received": []}

    # A task moved into Ada's project leaves Bob's board and joins Ada's.
    psql.execute(
        "UPDATE tasks_task SET project_id = %s WHERE id = %s", [ada.projects[0].pk, bob_new]
    )
    expect(card(ada_page, bob_new, "open")).to_have_count(1, timeout=WAIT_MS)
    expect(card(bob_page, bob_new)).to_have_count(0, timeout=WAIT_MS)
    expect_board(ada_page, rows_of(psql, ada))
    expect_board(bob_page, rows_of(psql, bob))
    assert open_board.leaks(bob_page) == {"shown": [], "received": []}


@ONE_MODE
def test_detail_pane_follows_its_row(open_board, make_account, psql):
    ada = make_account("ada")
    (home,) = ada.projects
    pk = insert_task(psql, home, "Fix the fence")
    page = open_board(ada)

    card(page, pk).locator('[data-testid="task-title"]').click()
    detail = page.locator("#detail")
    expect(detail).to_be_visible(timeout=WAIT_MS)
    expect(detail).to_have_attribute("data-task-id", str(pk), timeout=WAIT_MS)
    expect(detail).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    expect(page.locator("#detail-title")).to_have_value("Fix the fence", timeout=WAIT_MS)

    psql.execute("UPDATE tasks_task SET title = 'Paint the fence' WHERE id = %s", [pk])
    expect(page.locator("#detail-title")).to_have_value("Paint the fence", timeout=WAIT_MS)
    expect(page.locator("#detail-log li").first).to_contain_text("Paint the fence", timeout=WAIT_MS)

    psql.execute("UPDATE tasks_task SET done = true WHERE id = %s", [pk])
    expect(page.locator("#detail-done")).to_be_checked(timeout=WAIT_MS)

    psql.execute("DELETE FROM tasks_task WHERE id = %s", [pk])
    expect(detail).to_have_attribute("data-state", "gone", timeout=WAIT_MS)
    expect(page.locator("#detail-gone")).to_be_visible(timeout=WAIT_MS)


@ONE_MODE
def test_create_edit_move_delete_through_the_page(open_board, make_account, psql):
    ada = make_account("ada", projects=("Garden", "Kitchen"))
    garden, kitchen = ada.projects
    page = open_board(ada)

    # create: the form sends the socket's create action
    page.locator("#new-task-title").fill("Plant tulips")
    page.locator("#new-task-project").select_option(str(garden.pk))
    page.locator("#new-task-submit").click()
    created = page.locator('[data-testid="column"][data-column="open"] [data-testid="task-card"]')
    expect(created.locator('[data-testid="task-title"]')).to_have_text(
        ["Plant tulips"], timeout=WAIT_MS
    )
    expect(page.locator("#new-task-title")).to_have_value("", timeout=WAIT_MS)
    pk = int(created.first.get_attribute("data-task-id"))
    assert Task.objects.filter(pk=pk).values_list("title", "project_id", "done").get() == (
        "Plant tulips",
        garden.pk,
        False,
    )

    # move: the card's checkbox patches done
    card(page, pk).locator('[data-testid="task-done"]').check()
    expect(card(page, pk, "done")).to_have_count(1, timeout=WAIT_MS)
    assert Task.objects.get(pk=pk).done is True

    # edit: the detail pane patches title and project
    card(page, pk).locator('[data-testid="task-title"]').click()
    expect(page.locator("#detail")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    page.locator("#detail-title").fill("Plant tulips and crocuses")
    page.locator("#detail-project").select_option(str(kitchen.pk))
    page.locator("#detail-save").click()
    expect(card(page, pk).locator('[data-testid="task-title"]')).to_have_text(
        "Plant tulips and crocuses", timeout=WAIT_MS
    )
    expect(card(page, pk)).to_have_attribute("data-project-id", str(kitchen.pk), timeout=WAIT_MS)
    assert Task.objects.filter(pk=pk).values_list("title", "project_id").get() == (
        "Plant tulips and crocuses",
        kitchen.pk,
    )

    # delete: two clicks in the detail pane
    page.locator("#detail-delete").click()
    page.locator("#detail-delete").click()
    expect(card(page, pk)).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator("#detail")).to_have_attribute("data-state", "gone", timeout=WAIT_MS)
    assert not Task.objects.filter(pk=pk).exists()
    expect_board(page, rows_of(psql, ada))
