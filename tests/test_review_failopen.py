"""Fail-open review (grants that should be denials): each test below FAILS on the code it
was written against and passes once the defect is fixed. Models are not loaded: a scripted
engine stands in for detection and embedding (frame pixel [0, 0, 0] picks the template of
the frame's one face), and a fixed texture score stands in for MiniFASNet, so each test
isolates one decision rule of faceunlock.unlock / faceunlock.liveness."""

from __future__ import annotations

import math

import numpy as np
import pytest

import faceunlock as fu
from faceunlock import embed
from faceunlock.detect import Face
from faceunlock.liveness import Liveness
from faceunlock.liveness.challenge import Challenge, Observation, Prompt
from faceunlock.liveness.tracks import RIGID_LANDMARKS
from faceunlock.store import UserRecord

SPEC = embed.MOBILEFACENET  # thresholds: match 0.7579, convenience 0.6579 → identity check 0.6079
DIM = SPEC.dim
NOW = 1_000_000.0
NO_FACE = 255


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def at_cosine(base: np.ndarray, other: np.ndarray, cos: float) -> np.ndarray:
    """A unit vector with cosine ``cos`` to unit ``base``, in the plane of base and other."""
    o = other - (other @ base) * base
    o = o / np.linalg.norm(o)
    return unit(cos * base + math.sqrt(1 - cos * cos) * o)


class ScriptedEngine:
    """FaceEngine stand-in: one face per frame whose template is ``templates[frame[0, 0, 0]]``
    (no face when that pixel is 255)."""

    def __init__(self, templates: list[np.ndarray], landmarks: dict[int, np.ndarray] | None = None) -> None:
        self.templates = templates
        self.embedder_spec = SPEC
        rng = np.random.default_rng(0)
        self.landmarks = (rng.normal(size=(468, 3)) * 20 + [48, 48, 0]).astype(np.float32)
        self.landmarks_of = landmarks or {}  # template index -> landmarks (default: self.landmarks)

    def detect(self, frame: np.ndarray) -> list[Face]:
        if int(frame[0, 0, 0]) == NO_FACE:
            return []
        lm = self.landmarks_of.get(int(frame[0, 0, 0]), self.landmarks)
        return [Face(box=(16.0, 16.0, 80.0, 80.0), score=0.99, landmarks=lm, yaw=0.0, pitch=0.0, roll=0.0)]

    def face_template(self, frame: np.ndarray, face: Face) -> np.ndarray:
        return self.templates[int(frame[0, 0, 0])]


class IndexTexture:
    """MiniFASNet stand-in: the face of a frame whose template index is in ``prints`` (a
    photo or screen held up) scores 0.1, every other face 0.9 (a live face)."""

    def __init__(self, prints=()) -> None:
        self.prints = set(prints)

    def score(self, frame, box) -> float:
        return 0.1 if int(frame[0, 0, 0]) in self.prints else 0.9


def scripted_frames(indices, fps: float = 30.0, times=None):
    """(timestamp_s, frame) pairs: frame j shows template ``indices[j]``; the picture
    brightens 2 grey levels a frame, so the frozen-feed test sees a changing scene."""
    for j, i in enumerate(indices):
        f = np.full((96, 96, 3), 60 + (2 * j) % 120, np.uint8)
        f[0, 0, 0] = i
        yield (j / fps if times is None else times(j)), f


def make_unlock(tmp_path, templates, *, liveness_kw=None, policy_kw=None, prints=(), landmarks=None):
    owner = templates[0]
    store = fu.TemplateStore(tmp_path / "s.fus", key=b"k" * 32)
    store.put("alice", UserRecord(templates=np.stack([owner] * 5), embedder=SPEC.name, created=1.0))
    eng = ScriptedEngine(templates, landmarks)
    live = Liveness(eng, **(liveness_kw or {}))
    live._texture = IndexTexture(prints)  # the texture models are not what these tests are about
    policy = fu.Policy(require_attention=False, **(policy_kw or {}))  # the stand-in mesh has no eyes
    return fu.FaceUnlock(store, engine=eng, liveness=live, policy=policy, clock=lambda: NOW), store


@pytest.fixture
def vectors():
    rng = np.random.default_rng(1)
    owner = unit(rng.normal(size=DIM))
    other = unit(rng.normal(size=DIM))
    return owner, other


# --------------------------------------------------------------------------- finding 1
@pytest.mark.parametrize("order", ["photo_then_attacker", "interleaved"])
def test_the_face_judged_live_must_be_the_face_that_matched(tmp_path, vectors, order):
    """Two frames of the owner (a photo or screen held up) meet the 2-of-3 frame rule; the
    rest of the attempt is another person's live face. That person scores 0.65 against the
    owner's templates — far below the match threshold 0.7579 (and below the convenience
    threshold 0.6579, the FAR 1e-3 point), but above the liveness identity check's 0.6079,
    which compares each face frame only with the previous one. "photo_then_attacker": the
    hit is sticky and clear misses are not counted after it, so the verdict rests on 8
    frames of which 6 are a face that never matched. "interleaved": owner frames every third
    frame keep the clear-miss stop from firing (it needs 3 clear misses in a row)."""
    owner, other = vectors
    attacker = at_cosine(owner, other, 0.65)
    # template 0: the owner live; 1: the attacker live; 2: the owner's photo (texture 0.1)
    u, _ = make_unlock(tmp_path, [owner, attacker, owner], prints={2})
    # controls: the attacker alone is refused, the owner alone is granted, the photo alone refused
    alone = u.unlock("alice", scripted_frames([1] * 30))
    assert not alone.granted and alone.reason is fu.Reason.NO_MATCH
    assert u.unlock("alice", scripted_frames([0] * 30)).granted
    photo = u.unlock("alice", scripted_frames([2] * 30))
    assert not photo.granted and photo.reason is fu.Reason.LIVENESS_FAILED
    seq = [2, 2] + [1] * 28 if order == "photo_then_attacker" else [1, 1, 2] * 3 + [2] + [1] * 20
    r = u.unlock("alice", scripted_frames(seq))
    assert not r.granted, (f"granted on {r.frames_used} frames: {seq[:r.frames_used].count(2)} of the owner's photo, "
                           f"{seq[:r.frames_used].count(1)} of a live face scoring 0.65 < threshold {u.threshold}")


# --------------------------------------------------------------------------- finding 2
def test_check_identity_false_must_not_unbind_liveness_from_the_match(tmp_path, vectors):
    """``Liveness(check_identity=False)`` is documented as a cost switch for
    :meth:`Liveness.check` ("compute identity templates in check(), ≈ 7 ms per frame"), but
    it also sets the identity threshold of every FaceUnlock session to 0, although unlock
    passes the templates for free: two frames of the owner's photo, then ANY live face."""
    owner, other = vectors
    stranger = at_cosine(owner, other, 0.0)
    u, _ = make_unlock(tmp_path, [owner, stranger, owner], prints={2})
    # control: with the default Liveness the swap is caught
    r0 = u.unlock("alice", scripted_frames([2, 2] + [1] * 28))
    assert not r0.granted
    u2, _ = make_unlock(tmp_path / "b", [owner, stranger, owner], liveness_kw={"check_identity": False}, prints={2})
    r = u2.unlock("alice", scripted_frames([2, 2] + [1] * 28))
    assert not r.granted, "a stranger (cosine 0 to the owner) was granted after two frames of the owner's photo"


# --------------------------------------------------------------------------- finding 3
@pytest.mark.parametrize("times", [lambda j: float("nan"), lambda j: -j / 30.0, lambda j: 0.0],
                         ids=["nan", "backwards", "frozen"])
def test_frame_timestamps_cannot_extend_the_attempt(tmp_path, vectors, times):
    """The attempt lasts policy.timeout_s (3 s) of camera time: 91 frames at 30 fps. With
    NaN, decreasing or constant timestamps the deadline never fires and one charged attempt
    reads MAX_ATTEMPT_FRAMES (1000) frames — 11x the chances for a near-miss face to meet
    the frame rule once."""
    owner, other = vectors
    near = at_cosine(owner, other, SPEC.threshold - 0.02)  # a near miss: never a clear miss
    tmp = tmp_path / "t"
    tmp.mkdir()
    u, _ = make_unlock(tmp, [owner, near])
    ok = u.unlock("alice", scripted_frames([1] * 2000))
    assert ok.reason is fu.Reason.NO_MATCH and ok.frames_used <= 91  # control: real timestamps
    try:
        r = u.unlock("alice", scripted_frames([1] * 2000, times=times))
    except fu.FaceUnlockError:
        return  # refusing unusable timestamps is a fix too
    assert r.frames_used <= 91, f"{r.frames_used} frames read in one attempt"


def test_challenge_deadline_holds_with_bad_timestamps():
    """A challenge step must time out: with NaN or decreasing timestamps it never does."""
    for bad in (float("nan"), -100.0):
        ch = Challenge([Prompt.TURN_LEFT], step_timeout_s=3.0)
        ch.feed_observation(Observation(0.0, None, None, 0))
        control = Challenge([Prompt.TURN_LEFT], step_timeout_s=3.0)
        control.feed_observation(Observation(0.0, None, None, 0))
        assert control.feed_observation(Observation(10.0, None, None, 0)).done  # control
        st = None
        for _ in range(500):
            st = ch.feed_observation(Observation(bad, None, None, 0))
        assert st.done and not st.passed, f"timestamp {bad}: challenge still waiting after 500 frames"


# --------------------------------------------------------------------------- finding 4
def _turned(base: np.ndarray, yaw_deg: float) -> np.ndarray:
    a = math.radians(yaw_deg)
    r = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    c = base[RIGID_LANDMARKS].mean(0)
    return ((base - c) @ r.T + c).astype(np.float32)


def _passed_challenge(landmarks: np.ndarray) -> Challenge:
    for yaw in (25.0, -25.0):
        ch = Challenge([Prompt.TURN_LEFT], step_timeout_s=3.0)
        t = 0.0
        for _ in range(3):
            ch.feed_observation(Observation(t, landmarks, None, 1))
            t += 0.05
        for k in range(1, 11):
            st = ch.feed_observation(Observation(t, _turned(landmarks, yaw * k / 10), None, 1))
            t += 0.05
            if st.done:
                break
        if ch.state.passed:
            return ch
    raise AssertionError("could not build a passed challenge")


def test_a_challenge_answered_in_an_earlier_attempt_is_not_reused(tmp_path, vectors):
    """unlock() accepts a Challenge that was already passed before the attempt: none of the
    attempt's frames answered a prompt, yet the challenge counts as passed (e.g. an app that
    retries ``unlock(user, cam, challenge=ch)`` with the same ``ch`` after the owner answered
    it once but was denied)."""
    owner, _ = vectors
    u, _ = make_unlock(tmp_path, [owner])
    ch = _passed_challenge(u.engine.landmarks)
    assert ch.state.done and ch.state.passed
    try:
        r = u.unlock("alice", scripted_frames([0] * 30), challenge=ch)
    except fu.FaceUnlockError:
        return  # refusing a used challenge is the fix
    assert not r.granted, "granted on a challenge whose prompts were answered before this attempt"


# --------------------------------------------------------------------------- finding 5
@pytest.mark.parametrize("value", [None, 0, "", "no"])
def test_policy_require_attention_is_validated_like_the_other_switches(value):
    """Policy validates require_challenge and adapt_templates as bools but not
    require_attention: ``Policy(require_attention=None)`` (e.g. an unset config value) is
    accepted and silently falls back to ``Liveness.require_attention`` (False), so a
    sleeping owner's face unlocks; ``"no"`` is accepted and means yes."""
    with pytest.raises(fu.PolicyError):
        fu.Policy(require_attention=value)


# --------------------------------------------------------------------------- finding 1, identify
def test_identify_names_the_user_whose_face_was_judged_live(tmp_path, vectors):
    """identify(): two frames of alice's photo meet the frame rule for alice; the rest of the
    attempt is bob's live face (bob is enrolled too, and scores 0.65 against alice — above
    the liveness identity check's 0.6079). The grant goes to ALICE although the face judged
    live is bob's (e.g. a family member logging into another member's account). Feeding the
    liveness check only frames that match does not catch this: bob's frames match bob;
    the evidence must be of the user identified."""
    owner, other = vectors
    bob = at_cosine(owner, other, 0.65)
    u, store = make_unlock(tmp_path, [owner, bob, owner], prints={2})  # 2: alice's photo
    store.put("bob", UserRecord(templates=np.stack([bob] * 5), embedder=SPEC.name, created=1.0))
    # controls: each alone is identified as themselves; alice's photo alone is refused
    assert u.identify(scripted_frames([0] * 30)).user == "alice"
    assert u.identify(scripted_frames([1] * 30)).user == "bob"
    assert u.identify(scripted_frames([2] * 30)).user is None
    seq = [2, 2] + [1] * 28
    r = u.identify(scripted_frames(seq))
    assert r.user != "alice", f"identified as alice from {seq[:r.frames_used].count(2)} photo frames, the live face bob's"


# --------------------------------------------------------------------------- finding 3b
@pytest.mark.parametrize("fps", [-30.0, float("inf"), float("nan")])
def test_fps_cannot_extend_the_attempt(tmp_path, vectors, fps):
    """Bare frames are timed by ``fps``; a negative, infinite or NaN fps (e.g. a camera
    property that OpenCV reports as -1, passed through) gives a step of 1/fps < 0, 0 or NaN,
    and the camera-time deadline never comes: one charged attempt reads MAX_ATTEMPT_FRAMES."""
    owner, other = vectors
    near = at_cosine(owner, other, SPEC.threshold - 0.02)
    u, _ = make_unlock(tmp_path, [owner, near])

    def bare():
        return (f for _, f in scripted_frames([1] * 2000))

    ok = u.unlock("alice", bare(), fps=30.0)
    assert ok.reason is fu.Reason.NO_MATCH and ok.frames_used <= 91  # control
    try:
        r = u.unlock("alice", bare(), fps=fps)
    except (fu.FaceUnlockError, ValueError):
        return  # refusing the fps is a fix too
    assert r.frames_used <= 91, f"fps={fps}: {r.frames_used} frames read in one attempt"


# --------------------------------------------------------------------------- finding 6
def _answers(landmarks: np.ndarray, yaw: float) -> bool:
    ch = Challenge([Prompt.TURN_LEFT], step_timeout_s=3.0)
    t = 0.0
    for _ in range(3):
        ch.feed_observation(Observation(t, landmarks, None, 1))
        t += 0.05
    return ch.feed_observation(Observation(t, _turned(landmarks, yaw), None, 1)).passed


def test_the_challenge_must_be_answered_by_the_face_that_matched(tmp_path, vectors):
    """The challenge is the step-up against replays that fool the passive check. It is fed
    every face frame, also those that do not match the user, and binds them only by its own
    frame-to-frame identity check (0.6079): a replay of the owner that passes the passive
    check (texture stand-in: live) supplies the match and the passive evidence, and a
    lookalike's live head (0.65 to the owner, not a match) answers the prompt."""
    owner, other = vectors
    lookalike = at_cosine(owner, other, 0.65)
    base = ScriptedEngine([owner]).landmarks
    yaw = 25.0 if _answers(base, 25.0) else -25.0
    assert _answers(base, yaw)
    # 0: the owner's replay (matches, passes the passive check); 1: the lookalike, head turned
    u, _ = make_unlock(tmp_path, [owner, lookalike], landmarks={1: _turned(base, yaw)})
    # control: the replay alone does not answer the prompt
    r0 = u.unlock("alice", scripted_frames([0] * 200), challenge=u.liveness.new_challenge(1))
    assert not r0.granted
    ch = Challenge([Prompt.TURN_LEFT], step_timeout_s=3.0, identity_threshold=u.liveness.identity_threshold)
    r = u.unlock("alice", scripted_frames([0] * 10 + [1] * 5 + [0] * 20), challenge=ch)
    assert not r.granted, "the prompt was answered by a face that does not match the user"


# --------------------------------------------------------------------------- finding 7 (log forging)
def test_pam_log_lines_cannot_be_forged_through_the_user_name(monkeypatch, capsys):
    """pam-auth logs ``user={user}`` raw to syslog (authpriv) and stderr. PAM_USER comes from
    whoever typed at the login prompt; a name with a newline writes a second, forged line
    (here a "granted" decision for root) into the auth log that admins and tools trust."""
    import argparse

    from faceunlock import pam

    import syslog

    logged: list[str] = []
    monkeypatch.setattr(syslog, "openlog", lambda *a, **k: None)
    monkeypatch.setattr(syslog, "syslog", lambda prio, msg: logged.append(msg))
    forged = "nobody\nfaceunlock[1]: service=sudo user=root granted reason=granted"
    monkeypatch.setenv("PAM_USER", forged)
    monkeypatch.setenv("PAM_TYPE", "session")  # the path that logs before reading any file
    assert pam.run(argparse.Namespace()) == pam.EXIT_DENIED
    err = capsys.readouterr().err
    assert logged and all("\n" not in m and "\r" not in m for m in logged), logged  # syslog
    assert err.count("\n") == 1, err  # stderr: one line


# --------------------------------------------------------------------------- finding 8
@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() != 0,
                    reason="pam-auth's ownership checks apply as root only")
def test_pam_checks_the_embedder_spec_it_actually_read(tmp_path, monkeypatch):
    """pam-auth (root) reads the spec of a user's imported embedder from
    ``user_model_dir()/NAME/spec.json`` — $FACEUNLOCK_MODEL_DIR or $XDG_DATA_HOME when set —
    but the ownership check looks at ``spec.path`` and ``spec.path.parent/spec.json``: the
    directory of the model FILE that spec names. A spec in a world-writable directory that
    names a root-owned model (and so a root-owned spec.json beside it) passes, and its own
    thresholds (0.01 here) decide the match."""
    import argparse
    import os

    from faceunlock import pam

    legit = tmp_path / "root-models" / "custom"
    legit.mkdir(parents=True, mode=0o755)
    os.chmod(tmp_path / "root-models", 0o755)
    (legit / "model.tflite").write_bytes(b"\0" * 64)
    good = SPEC.to_json() | {"name": "custom", "file": "model.tflite", "sha256": "", "source_sha256": ""}
    (legit / embed.SPEC_FILE).write_text(__import__("json").dumps(good))
    evil = tmp_path / "anyone" / "custom"
    evil.mkdir(parents=True)
    bad = good | {"file": str(legit / "model.tflite"), "threshold": 0.01, "convenience_threshold": 0.01}
    (evil / embed.SPEC_FILE).write_text(__import__("json").dumps(bad))
    for p in (tmp_path / "anyone", evil, evil / embed.SPEC_FILE):
        os.chmod(p, 0o777 if p.is_dir() else 0o666)  # anyone may write what is read
    assert embed.load_spec(evil).threshold == 0.01

    sdir = tmp_path / "store"
    sdir.mkdir(mode=0o700)
    store = fu.TemplateStore(sdir / "s.fus", key_file=sdir / "s.key")
    store.put("alice", UserRecord(templates=np.stack([unit(np.ones(DIM))] * 5), embedder="custom", created=1.0))
    logged: list[str] = []
    monkeypatch.setattr(pam, "_log", lambda prio, msg: logged.append(msg))
    monkeypatch.setenv("FACEUNLOCK_MODEL_DIR", str(tmp_path / "anyone"))
    monkeypatch.setenv("PAM_USER", "alice")
    monkeypatch.setenv("PAM_TYPE", "auth")
    monkeypatch.setenv(pam.TEST_SOURCES_ENV, "1")
    args = argparse.Namespace(config=str(tmp_path / "none.conf"), source=str(tmp_path / "no-such-video.mp4"),
                              seconds=None, level=None, no_liveness=None, allow_remote=True, challenge=False,
                              skip=0.0, store=str(sdir / "s.fus"), key_file=str(sdir / "s.key"))
    # control: a spec whose model file sits in the world-writable directory is refused
    ctl = tmp_path / "anyone2" / "custom"
    ctl.mkdir(parents=True)
    (ctl / "model.tflite").write_bytes(b"\0" * 64)
    (ctl / embed.SPEC_FILE).write_text(__import__("json").dumps(good))
    for p in (tmp_path / "anyone2", ctl):
        os.chmod(p, 0o777)
    monkeypatch.setenv("FACEUNLOCK_MODEL_DIR", str(tmp_path / "anyone2"))
    assert pam.run(args) == pam.EXIT_ERROR and "refusing" in logged[-1], logged
    logged.clear()
    monkeypatch.setenv("FACEUNLOCK_MODEL_DIR", str(tmp_path / "anyone"))
    assert pam.run(args) == pam.EXIT_ERROR  # refused either way (no camera here); the question is why
    assert any("refusing" in m and "spec" in m for m in logged), logged
