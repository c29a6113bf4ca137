"""Bringing one's own model: unmodified transformers models and plain
nn.Modules, annotated from outside, train exactly like eager PyTorch.

Parity cases compile a tiny random-config transformers model with
`piper.annotate("PP", ...)` on its decoder layers (nothing inside the model
changes), train 3 AdamW steps on real gloo processes, and compare every
loss and the final parameters (`plan.state_dict()`, the model's own names)
with one process training the plain model on the same global batches:
losses to rtol 1e-5, each parameter to 1e-5 relative (normwise, with an
absolute floor of 1e-6 an element).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import transformers as T
from eager import train_eagerly

import piper
from piper.diagnostics import PiperError

STEPS = 3
VOCAB, SEQ, BATCH = 97, 19, 2  # BATCH: one microbatch of one replica (what capture traces)
LR = 1e-3
_TINY = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, use_cache=False)


def llama():
    return T.LlamaForCausalLM(T.LlamaConfig(**_TINY))


def qwen3():
    return T.Qwen3ForCausalLM(T.Qwen3Config(head_dim=12, **_TINY))


def mistral():
    return T.MistralForCausalLM(T.MistralConfig(**_TINY))


def gpt2():
    # Tied (the default): the embedding's weight is the head's, in the first
    # and the last stage.
    cfg = T.GPT2Config(vocab_size=VOCAB, n_embd=48, n_layer=4, n_head=4, n_positions=32,
                       use_cache=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return T.GPT2LMHeadModel(cfg)


def layers_of(model):
    return model.transformer.h if isinstance(model, T.GPT2LMHeadModel) else model.model.layers


def two_regions(model):
    """Four decoder layers as two PP regions of two layers each."""
    piper.annotate("PP", {layer: i // 2 for i, layer in enumerate(layers_of(model))})


def one_region_each(model):
    piper.annotate("PP", layers_of(model))


def token_batches(n: int, rows: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(7)
    out = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (rows, SEQ), generator=gen)
        out.append({"input_ids": ids, "labels": ids})
    return out


def assert_close_normwise(got: torch.Tensor, want: torch.Tensor, name: str, rtol=1e-5,
                          atol=1e-6):
    """|got - want| <= rtol |want| + atol sqrt(numel): 1e-5 relative, with the
    other parity tests' floor of 1e-6 an element (GPT-2's biases start at
    zero, so after 3 steps they are made of Adam steps alone)."""
    err = (got - want).norm().item()
    assert err <= rtol * want.norm().item() + atol * want.numel() ** 0.5, (
        f"{name}: |got - want| = {err:.3g}, |want| = {want.norm().item():.3g}")


def train_and_compare(make, annotate, strategy, replicas: int, microbatches: int,
                      skip=lambda name, got, want: False):
    torch.manual_seed(0)
    model, reference = make().train(), make().train()
    reference.load_state_dict(model.state_dict())
    annotate(model)
    example = token_batches(1, BATCH)[0]
    plan = piper.compile(model, example, optimizer=torch.optim.AdamW(model.parameters(), lr=LR),
                         strategy=strategy)
    batches = token_batches(STEPS, BATCH * replicas * microbatches)
    result = plan.run(batches)

    losses = train_eagerly(reference, batches, torch.optim.AdamW(reference.parameters(), lr=LR),
                           lambda m, b: m(**b).loss)
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(losses),
                               rtol=1e-5, atol=0)
    trained = plan.state_dict()
    assert trained.keys() == reference.state_dict().keys()
    for name, p in reference.named_parameters():
        if not skip(name, trained[name], p.detach()):
            assert_close_normwise(trained[name], p.detach(), name)
    return plan, model, reference


PIPELINE = [piper.place(pp=2), piper.split(2), piper.replicate(2), piper.shard(1)]


@pytest.mark.parametrize("make", [llama, qwen3, mistral], ids=["llama", "qwen3", "mistral"])
def test_transformers_model_pp2_dp2_zero1_1f1b(make):
    plan, _, _ = train_and_compare(make, two_regions, PIPELINE + [piper.order("1f1b")],
                                   replicas=2, microbatches=2)
    assert plan.num_devices == 4


def _gpt2_key_bias(name, got, want):
    """GPT-2's attention key bias has a gradient that is exactly zero in
    exact arithmetic (softmax ignores a shift shared by all keys): what
    remains is rounding noise, which Adam normalises to steps of up to lr,
    differently in every implementation. Its query and value thirds are
    compared; its key third is checked to stay within those steps."""
    if not name.endswith("attn.c_attn.bias"):
        return False
    d = want.numel() // 3
    assert_close_normwise(torch.cat([got[:d], got[2 * d:]]),
                          torch.cat([want[:d], want[2 * d:]]), name)
    assert (got[d:2 * d] - want[d:2 * d]).abs().max() <= 2 * LR * STEPS
    return True


@pytest.mark.parametrize("zero", [1, 3])
def test_gpt2_tied_head_pp2_dp2_1f1b(zero):
    """GPT-2's tied embedding and head live in the first and last stage:
    the first owns the weight and sends it on, and the plan trains it like
    eager (ZeRO-3: the owner gathers it before sending)."""
    plan, _, _ = train_and_compare(
        gpt2, two_regions,
        [piper.place(pp=2), piper.split(2), piper.replicate(2), piper.shard(zero),
         piper.order("1f1b")], replicas=2, microbatches=2, skip=_gpt2_key_bias)
    assert plan.state_dict()["lm_head.weight"] is plan.state_dict()["transformer.wte.weight"]


def test_llama_interleaved_one_layer_per_region():
    plan, _, _ = train_and_compare(llama, one_region_each,
                                   PIPELINE + [piper.order("interleaved")],
                                   replicas=2, microbatches=2)
    assert "1F0" in plan.summary() and "3F0" in plan.summary()


def test_llama_zero_bubble_and_weights_round_trip(tmp_path):
    """ZB-H1 (split backward); then the trained weights go back into the
    model, out with save_pretrained and in again with from_pretrained, and
    the loaded model captures as it is."""
    plan, model, reference = train_and_compare(
        llama, two_regions, PIPELINE + [piper.split_backward(), piper.order("zb-h1")],
        replicas=2, microbatches=2)
    model.load_state_dict(plan.state_dict())
    model.save_pretrained(tmp_path)
    loaded = T.LlamaForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    for name, p in loaded.state_dict().items():
        torch.testing.assert_close(p, model.state_dict()[name], rtol=0, atol=0)
    step = piper.capture(loaded.train(), token_batches(1, BATCH)[0])
    assert step.input_names == ["input_ids", "labels"]
    assert set(step.signature.params) <= set(loaded.state_dict())


# -- annotations from outside -----------------------------------------------


class Stack(nn.Module):
    """Plain PyTorch: an embedding, blocks, a head and the loss."""

    def __init__(self, blocks=3):
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Tanh())
                                    for _ in range(blocks))
        self.head = nn.Linear(8, 11)

    def forward(self, tokens, targets):
        x = self.emb(tokens)
        for b in self.blocks:
            x = b(x)
        return nn.functional.cross_entropy(self.head(x).flatten(0, 1), targets.flatten())


def stack_example():
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 11, (2, 5), generator=gen), torch.randint(0, 11, (2, 5), generator=gen)


def tags_by_location(step) -> dict[str, set]:
    from piper.dialects.graph import AtenOp

    out: dict[str, set] = {}
    for fn in step.module.body.block.ops:
        for op in fn.body.block.ops:
            if isinstance(op, AtenOp) and op.location is not None and hasattr(op.location, "desc"):
                loc = op.location.desc.data
                out.setdefault(loc, set()).add(tuple(sorted(op.tag_dict().items())))
    return out


def test_outside_annotation_tags_forward_and_backward_ops():
    model = Stack()
    piper.annotate("PP", model.blocks)
    step = piper.capture(model, stack_example())
    tags = tags_by_location(step)
    for i in range(3):
        assert tags[f"blocks.{i}.0"] == {(("PP", i),)}, tags[f"blocks.{i}.0"]
    assert tags["emb"] == {()} and tags["head"] == {()}
    from piper.dialects.graph import AtenOp

    bwd = next(f for f in step.module.body.block.ops if f.sym_name.data == "backward")
    assert {op.tag_dict().get("PP") for op in bwd.body.block.ops
            if isinstance(op, AtenOp) and getattr(op.location, "desc", None) is not None
            and op.location.desc.data == "blocks.2.0"} == {2}


def test_outside_annotation_dict_groups_and_unannotated_ops_join():
    model = Stack(blocks=4)
    piper.annotate("PP", {b: i // 2 for i, b in enumerate(model.blocks)})
    plan = piper.compile(model, stack_example(), strategy=[piper.place(pp=2)])
    summary = plan.summary()
    assert "stage 0: emb, blocks.0, blocks.1" in summary
    assert "stage 1: blocks.2, blocks.3, head" in summary


@pytest.mark.parametrize("schedule", ["1f1b", "gpipe"])
def test_place_spreads_more_regions_than_devices_over_the_stages(schedule):
    model = Stack(blocks=4)
    piper.annotate("PP", model.blocks)
    plan = piper.compile(model, stack_example(),
                         strategy=[piper.place(pp=2), piper.split(2), piper.order(schedule)])
    assert plan.stage_modules() == {0: ["emb", "blocks.0", "blocks.1"],
                                    1: ["blocks.2", "blocks.3", "head"]}


def test_outside_annotation_of_a_model_is_the_same_plan_as_inside():
    """The examples' in-forward form and the outside form give one IR."""

    class Inside(Stack):
        def forward(self, tokens, targets):
            x = self.emb(tokens)
            for b in self.blocks:
                with piper.annotate("PP"):
                    x = b(x)
            return nn.functional.cross_entropy(self.head(x).flatten(0, 1), targets.flatten())

    torch.manual_seed(0)
    inside = Inside()
    outside = Stack()
    outside.load_state_dict(inside.state_dict())
    piper.annotate("PP", outside.blocks)
    a = piper.compile(inside, stack_example(), strategy=[piper.place(pp=3)]).text()
    b = piper.compile(outside, stack_example(), strategy=[piper.place(pp=3)]).text()
    assert a == b


STRANGER = nn.Linear(2, 2)  # a module of no model


@pytest.mark.parametrize(("setup", "message"), [
    (lambda m: piper.annotate("PP", [m.blocks[0], STRANGER]),
     "1 of the 2 modules annotated together are not inside the model"),
    (lambda m: (piper.annotate("PP", m.blocks), piper.annotate("PP", {m.blocks[0][0]: 0})),
     "'blocks.0.0' (PP 0) is inside 'blocks.0' (PP 0); regions of one tag must not overlap"),
    (lambda m: (piper.annotate("PP", m.blocks), piper.annotate("PP", {m.blocks[1]: 0})),
     "is already in PP region 1, not 0; call piper.clear_annotations(model)"),
    (lambda m: piper.annotate("PP", [m.blocks[0], m.blocks[0]]),
     "Sequential is given twice (entries 0 and 1)"),
    (lambda m: piper.annotate("PP", {m.blocks[0]: "1"}),
     "the index of Sequential (entry 0) is '1'; indices are integers 0, 1, ..."),
    (lambda m: piper.annotate("PP", {m.blocks[0]: True}), "indices are integers"),
    (lambda m: piper.annotate("PP", 1.5), "expected a module, a ModuleList"),
    (lambda m: piper.annotate("PP", [m.blocks[0], 3]), "entry 1 is a int, not an nn.Module"),
    (lambda m: piper.annotate("PASS", m.blocks), "tag 'PASS' must be an identifier"),
    (lambda m: piper.annotate("PP", []), "no modules given"),
])
def test_annotation_errors_name_the_modules(setup, message):
    model = Stack()
    with pytest.raises(PiperError) as e:
        setup(model)
        piper.capture(model, stack_example())
    assert message in e.value.render()


ANNOTATE = ('annotate its blocks, e.g. piper.annotate("PP", model.layers), or write '
            '`with piper.annotate("PP"):` around each block inside forward')


@pytest.mark.parametrize("strategy,message", [
    ([piper.place(pp=2)], "directive place(pp=2): convert-graph-to-dist: the model has one "
     "pipeline stage (no PP regions, or one), so it cannot run on pp=2 devices: " + ANNOTATE),
    ([piper.place(pp=2, placement="v")], "so it cannot run on pp=2 devices: " + ANNOTATE),
    ([piper.place(pp=2), piper.split(2), piper.order("1f1b")],
     "so it cannot run on pp=2 devices: " + ANNOTATE),
    ([piper.place({"PP": 0}, devices=[0]), piper.place({"PP": 1}, devices=[1])],
     'strategy[1]: error: directive place({"PP": 1}, devices=[1]): place: filter {"PP": 1} '
     "matches no stage (the model has stages 0..0); " + ANNOTATE),
])
@pytest.mark.parametrize("regions", [0, 1])
def test_unannotated_model_on_several_pipeline_devices_says_what_to_do(strategy, message,
                                                                      regions):
    """No PP region (or one, the whole model): a pipeline over devices names
    piper.annotate, both forms (it said '1 stages do not divide')."""
    model = Stack()
    if regions:
        piper.annotate("PP", model)
    with pytest.raises(PiperError) as e:
        piper.compile(model, stack_example(), strategy=strategy)
    assert message in e.value.render()
    assert "do not divide" not in e.value.render()


def test_clear_annotations_allows_annotating_anew():
    model = Stack()
    piper.annotate("PP", model.blocks)
    piper.clear_annotations(model)
    piper.annotate("PP", {model.blocks[0]: 0, model.blocks[1]: 0, model.blocks[2]: 1})
    plan = piper.compile(model, stack_example(), strategy=[piper.place(pp=2)])
    assert plan.num_devices == 2


# -- batches as users hold them ---------------------------------------------


@pytest.fixture(scope="module")
def stack_plan():
    model = Stack()
    piper.annotate("PP", model.blocks)
    return piper.compile(model, stack_example(), strategy=[piper.split(2)])


def test_batches_as_tuples_and_as_dicts_by_parameter_name(stack_plan):
    tokens, targets = torch.randint(0, 11, (4, 5)), torch.randint(0, 11, (4, 5))
    assert stack_plan.captured.input_names == ["tokens", "targets"]
    for batch in ((tokens, targets), {"tokens": tokens, "targets": targets},
                  {"input0": tokens, "input1": targets}):
        (b,) = stack_plan.batches([batch])
        assert b.keys() == {"input0", "input1"} and b["input0"] is tokens


@pytest.mark.parametrize(("batches", "message"), [
    ([(torch.zeros(4, 5, dtype=torch.long),)],
     "batches[0] has 1 entries; a batch is a tuple of 2 tensors (tokens, targets)"),
    ([{"tokens": torch.zeros(4, 5, dtype=torch.long), "labels": torch.zeros(4, 5)}],
     "batches[0] has the key 'labels'; a batch is a tuple of 2 tensors"),
    ([{"tokens": torch.zeros(4, 5, dtype=torch.long)}], "batches[0] has no 'targets'"),
    ([torch.zeros(4, 5)], "batches[0] is a Tensor; a batch is a tuple"),
    ({"tokens": torch.zeros(4, 5)}, "got one dict (wrap one batch in a list)"),
    ([(torch.zeros(4, 5, dtype=torch.long), [1, 2])], "batches[0]['targets'] is a list"),
    ([(torch.zeros(3, 5, dtype=torch.long), torch.zeros(3, 5, dtype=torch.long))],
     "batches[0]['tokens'] has shape [3, 5]; the plan takes 1 replicas x 2 microbatches of "
     "shape [2, 5], a batch of shape [4, 5] (set by split(n=2)"),
])
def test_bad_batches_get_one_error_naming_the_expected_form(stack_plan, tmp_path, batches,
                                                           message):
    with pytest.raises(PiperError) as e:
        stack_plan.save(str(tmp_path), batches)
    assert message in e.value.render()


def test_more_steps_than_batches_is_an_error_before_launch(stack_plan):
    batch = (torch.randint(0, 11, (4, 5)), torch.randint(0, 11, (4, 5)))
    with pytest.raises(PiperError) as e:
        stack_plan.run([batch, batch], steps=3)
    assert "3 steps asked for, but" in e.value.render()
    assert "holds 2 batches (one global batch per step)" in e.value.render()


# -- custom operators -------------------------------------------------------


def test_custom_op_model_trains_in_a_pipeline():
    """A torch.library custom op (fake kernel, autograd formula) inside
    each pipeline stage: opaque in the IR, run by the ranks (which import
    the module that registers it), trained like eager."""
    from examples.custom_op import CustomOpMLP

    torch.manual_seed(0)
    model, reference = CustomOpMLP(), CustomOpMLP()
    reference.load_state_dict(model.state_dict())
    piper.annotate("PP", model.blocks)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 16, generator=gen), torch.randint(0, 8, (4,), generator=gen)
    plan = piper.compile(model, (x, y), optimizer=torch.optim.AdamW(model.parameters(), lr=LR),
                         strategy=[piper.place(pp=2), piper.split(2), piper.order("1f1b")])
    assert plan.captured.libraries == ["examples.custom_op"]
    text = plan.text()
    assert '"piper_examples.scaled_silu.default"' in text
    assert '"piper_examples.scaled_silu_backward.default"' in text
    batches = [(torch.randn(8, 16, generator=gen), torch.randint(0, 8, (8,), generator=gen))
               for _ in range(STEPS)]
    result = plan.run(batches)
    opt = torch.optim.AdamW(reference.parameters(), lr=LR)
    losses = []
    for a, b in batches:
        opt.zero_grad()
        loss = reference(a, b)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(losses), rtol=1e-5,
                               atol=0)
    for name, p in plan.state_dict().items():
        torch.testing.assert_close(p, reference.state_dict()[name], rtol=1e-5, atol=1e-7)


def test_custom_op_without_fake_kernel_is_named():
    @torch.library.custom_op("piper_test::no_fake", mutates_args=())
    def no_fake(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return no_fake(self.fc(x)).sum()

    with pytest.raises(PiperError) as e:
        piper.capture(Model(), (torch.randn(2, 4),))
    msg = e.value.render()
    assert "custom operator piper_test::no_fake has no fake kernel" in msg
    assert "register_fake" in msg and "test_own_model.py" in msg


def test_model_output_without_a_loss_is_named():
    model = llama().train()
    with pytest.raises(PiperError) as e:
        piper.capture(model, {"input_ids": token_batches(1, BATCH)[0]["input_ids"]})
    assert "the model returns a CausalLMOutputWithPast" in e.value.render()
