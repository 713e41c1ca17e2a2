"""Verbalization: templates from the graph, user and defaults; triple and entity text; corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgweave.data.dataset import KGDataset, load_dataset
from kgweave.data.sources import demo_path
from kgweave.errors import InvalidArgumentError, NotFoundError
from kgweave.language.features.relation_phrases import WORDNET_TEMPLATES, default_template
from kgweave.language.features.verbalize import Verbalizer, split_sentences
from kgweave.language.joint.corpus import write_corpus


@pytest.fixture(scope="module")
def demo() -> KGDataset:
    return load_dataset(demo_path(), "demo")


@pytest.fixture(scope="module")
def verbalizer(demo: KGDataset) -> Verbalizer:
    return Verbalizer.from_dataset(demo)


def test_demo_triples_use_the_graph_templates(verbalizer: Verbalizer) -> None:
    assert (
        verbalizer.triple("marie_curie", "born_in", "warsaw") == "Marie Curie was born in Warsaw."
    )
    assert verbalizer.triple("warsaw", "capital_of", "poland") == "Warsaw is the capital of Poland."
    assert (
        verbalizer.triple("irene_joliot_curie", "spouse_of", "frederic_joliot_curie")
        == "Irène Joliot-Curie was married to Frédéric Joliot-Curie."
    )
    # a lower-case name starts the sentence with a capital
    assert (
        verbalizer.triple("physics", "field_of_work", "physics")
        == "Physics worked in the field of physics."
    )


def test_entity_paragraph_orders_facts_by_importance(verbalizer: Verbalizer) -> None:
    assert verbalizer.entity("ulm") == (
        "Ulm: city in Baden-Württemberg, Germany. Albert Einstein was born in Ulm."
    )
    # rarer relations first (influenced_by: 13 facts, born_in_year: 22, ... citizen_of: 57),
    # then better-connected neighbours (United States before Germany)
    assert verbalizer.entity("albert_einstein") == (
        "Albert Einstein: German-born theoretical physicist who developed the theory of "
        "relativity. Albert Einstein was influenced by James Clerk Maxwell. Albert Einstein was "
        "born in 1879. Albert Einstein is known for the work On the Electrodynamics of Moving "
        "Bodies. Albert Einstein received the Nobel Prize in Physics. Albert Einstein worked at "
        "Humboldt University of Berlin. Albert Einstein was born in Ulm. Albert Einstein was "
        "educated at ETH Zurich. Albert Einstein was a citizen of United States. Albert Einstein "
        "was a citizen of Germany."
    )


def test_entity_paragraph_stops_on_a_sentence_boundary(verbalizer: Verbalizer) -> None:
    full = verbalizer.entity("albert_einstein", max_chars=10_000)
    for limit in (100, 150, 200, 333):
        text = verbalizer.entity("albert_einstein", max_chars=limit)
        assert len(text) <= limit
        assert full.startswith(text)
        assert text.endswith(".")
        assert split_sentences(text) == split_sentences(full)[: len(split_sentences(text))]
    assert verbalizer.entity("albert_einstein", max_chars=200) == (
        "Albert Einstein: German-born theoretical physicist who developed the theory of "
        "relativity. Albert Einstein was influenced by James Clerk Maxwell. Albert Einstein was "
        "born in 1879."
    )
    # a first sentence longer than the limit is cut at a word boundary
    short = verbalizer.entity("albert_einstein", max_chars=30)
    assert short == "Albert Einstein: German-born"
    with pytest.raises(InvalidArgumentError):
        verbalizer.entity("albert_einstein", max_chars=0)


def test_entity_paragraph_with_given_facts_and_without_text(verbalizer: Verbalizer) -> None:
    facts = [("new_person", "born_in", "ulm"), ("new_person", "field_of_work", "physics")]
    assert verbalizer.entity("new_person", facts) == (
        "New person. New person was born in Ulm. New person worked in the field of physics."
    )


def test_output_is_deterministic(demo: KGDataset) -> None:
    a, b = Verbalizer.from_dataset(demo), Verbalizer.from_dataset(demo)
    for entity in demo.entities.labels[:40]:
        assert a.entity(entity) == b.entity(entity)
    triples = demo.train[:50].tolist()
    ents, rels = demo.entities.labels, demo.relations.labels
    assert [a.triple(ents[h], rels[r], ents[t]) for h, r, t in triples] == [
        b.triple(ents[h], rels[r], ents[t]) for h, r, t in triples
    ]


def test_relation_phrase_splits_around_the_slots(verbalizer: Verbalizer) -> None:
    phrase = verbalizer.relation_phrase("born_in")
    assert phrase.split_tail("Alan Turing") == ("Alan Turing was born in", ".")
    assert phrase.split_head("London") == ("", " was born in London.")
    assert verbalizer.tail_prompt("alan_turing", "born_in") == "Alan Turing was born in"
    assert verbalizer.head_prompt("born_in", "london") == ("", " was born in London.")
    # the head in the middle of a template
    nominated = Verbalizer().relation_phrase(
        "/award/award_category/nominees./award/award_nomination/nominated_for"
    )
    assert nominated.split_head("Titanic") == ("Titanic was nominated for the", ".")


def test_user_templates_override_and_are_checked(demo: KGDataset) -> None:
    custom = Verbalizer.from_dataset(
        demo, user_templates={"born_in": "{tail} is where {head} was born"}
    )
    assert (
        custom.triple("marie_curie", "born_in", "warsaw") == "Warsaw is where Marie Curie was born."
    )
    with pytest.raises(InvalidArgumentError, match="born_in"):
        Verbalizer(user_templates={"born_in": "{head} was born"})


def test_freebase_default_templates() -> None:
    assert default_template("/people/person/place_of_birth") == "{head} was born in {tail}."
    assert default_template("/people/person/profession") == "The profession of {head} is {tail}."
    assert default_template("/tv/tv_program/languages") == "The languages of {head} include {tail}."
    assert default_template("/location/location/contains") == "{head} contains {tail}."
    assert default_template("/influence/influence_node/influenced_by") == (
        "{head} was influenced by {tail}."
    )
    assert default_template("/film/film/written_by") == "{head} was written by {tail}."
    assert default_template("/medicine/symptom/symptom_of") == "{head} is a symptom of {tail}."
    # compound (mediator) paths
    assert (
        default_template(
            "/film/film/release_date_s./film/film_regional_release_date/film_release_region"
        )
        == "{head} was released in {tail}."
    )
    assert (
        default_template(
            "/base/schemastaging/person_extra/net_worth./measurement_unit/dated_money_value/currency"
        )
        == "The currency of {head}'s net worth is {tail}."
    )
    assert (
        default_template(
            "/award/award_nominated_work/award_nominations./award/award_nomination/nominated_for"
        )
        == "{head} was nominated for {tail}."
    )
    assert (
        default_template("/location/location/adjoin_s./location/adjoining_relationship/adjoins")
        == "{head} adjoins {tail}."
    )


def test_every_real_relation_gets_a_usable_template(datasets_dir: Path) -> None:
    for name in ("fb15k-237", "wn18rr"):
        relations = (datasets_dir / name / "relation2text.tsv").read_text(encoding="utf-8")
        labels = [line.split("\t")[0] for line in relations.splitlines() if line.strip()]
        assert len(labels) in (237, 11)
        verbalizer = Verbalizer()
        for label in labels:
            template = verbalizer.template(label)
            assert template.count("{head}") == 1 and template.count("{tail}") == 1, label
            assert " of of " not in template and "  " not in template, (label, template)
            sentence = verbalizer.triple("x_head", label, "y_tail")
            assert sentence[0].isupper() and sentence.endswith("."), sentence


def test_wordnet_defaults_and_lemma_definitions(datasets_dir: Path) -> None:
    assert len(WORDNET_TEMPLATES) == 11
    assert default_template("_hypernym") == "{head} is a kind of {tail}."
    assert default_template("_member_meronym") == "{head} has {tail} as a member."
    wn = load_dataset(datasets_dir / "wn18rr", "wn18rr")
    verbalizer = Verbalizer.from_dataset(wn, splits=())
    # entity2text holds "lemma, definition": the lemma is the name, the rest the description
    land_reform = next(e for e, t in wn.entity_names.items() if t.startswith("land reform, "))
    reform = next(e for e, t in wn.entity_names.items() if t.startswith("reform, "))
    assert verbalizer.name(land_reform) == "land reform"
    assert verbalizer.triple(land_reform, "_hypernym", reform) == "Land reform is a kind of reform."
    assert verbalizer.description_sentence(land_reform) == (
        "Land reform: a redistribution of agricultural land (especially by government action)."
    )


def test_snake_and_camel_case_defaults() -> None:
    assert default_template("born_in") == "{head} was born in {tail}."
    assert default_template("located_in") == "{head} is located in {tail}."
    assert default_template("capital_of") == "{head} is the capital of {tail}."
    assert default_template("member_of") == "{head} is a member of {tail}."
    assert default_template("worksFor") == "{head} works for {tail}."
    assert default_template("hasChild") == "{head} has child {tail}."
    assert default_template("spouse") == "The spouse of {head} is {tail}."


@pytest.mark.parametrize(
    ("relation", "sentence"),
    [
        ("causes", "Virus causes pathologic function."),
        ("treats", "Virus treats pathologic function."),
        ("affects", "Virus affects pathologic function."),
        ("disrupts", "Virus disrupts pathologic function."),
        ("measures", "Virus measures pathologic function."),
        ("performs", "Virus performs pathologic function."),
        ("complicates", "Virus complicates pathologic function."),
        ("carries_out", "Virus carries out pathologic function."),
        ("assesses_effect_of", "Virus assesses the effect of pathologic function."),
        ("adjacent_to", "Virus is adjacent to pathologic function."),
    ],
)
def test_verb_form_relations_read_as_verbs(relation: str, sentence: str) -> None:
    """UMLS-style verb names are verbs, not plural nouns ("The causes of virus include ...")."""
    assert Verbalizer().triple("virus", relation, "pathologic_function") == sentence


def test_every_umls_relation_reads_head_first(datasets_dir: Path) -> None:
    """No UMLS relation is turned into a noun phrase about the head ("The treats of ...")."""
    umls = load_dataset(datasets_dir / "umls")
    verbalizer = Verbalizer.from_dataset(umls, splits=())
    for relation in umls.relations.labels:
        sentence = verbalizer.triple("xhead", relation, "ytail")
        assert sentence.startswith("Xhead "), (relation, sentence)
        assert " the adjacent" not in sentence, (relation, sentence)


def test_from_artifact_matches_from_dataset(tmp_path: Path, demo: KGDataset) -> None:
    from kgweave.artifact import load_artifact, save_artifact
    from kgweave.models import build_model

    model = build_model(
        {"name": "distmult", "num_entities": demo.num_entities, "num_relations": 28, "dim": 4}
    )
    art = load_artifact(save_artifact(tmp_path / "m", model, demo, {}, {}))
    a = Verbalizer.from_artifact(art)
    b = Verbalizer.from_dataset(demo)
    assert a.triple("marie_curie", "born_in", "warsaw") == "Marie Curie was born in Warsaw."
    assert a.entity("albert_einstein", max_chars=400) != ""
    # artifacts keep no template file: defaults from relation names, same facts, same order
    assert a.template("born_in") == "{head} was born in {tail}."
    assert a.facts_of("ulm") == b.facts_of("ulm")


def test_corpus_is_deterministic_with_counts(tmp_path: Path, demo: KGDataset) -> None:
    counts = write_corpus(demo, tmp_path / "a.txt", progress=False)
    write_corpus(demo, tmp_path / "b.txt", progress=False)
    data = (tmp_path / "a.txt").read_bytes()
    assert data == (tmp_path / "b.txt").read_bytes()
    lines = data.decode("utf-8").splitlines()
    assert counts == {
        "facts": 424,
        "descriptions": 220,
        "lines": 644,
        "bytes": len(data),
    }
    assert "Marie Curie was a citizen of Poland." in lines
    assert "Warsaw: capital city of Poland." in lines
    assert "Marie Curie was born in Warsaw." not in lines  # a validation fact
    every = write_corpus(
        demo, tmp_path / "c.txt", splits=("train", "valid", "test"), include_descriptions=False,
        progress=False,
    )  # fmt: skip
    assert every["facts"] == 530 and every["descriptions"] == 0
    with pytest.raises(NotFoundError, match="no split"):
        write_corpus(demo, tmp_path / "d.txt", splits=("nope",), progress=False)
