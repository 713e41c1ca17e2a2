// kgweave's Cypher functions for FalkorDB (GRAPH.UDF LOAD kgweave), computed from the vectors
// kgweave writes back: each entity's `__EMBEDDING__` and `__SEARCH__` properties and one
// `:__RELATION__` node per relation (its vector, its reciprocal's, the model and its options).
//
//   kgweave.score(h, r, t)      the model's score of (h, r, t), as ScoreTriples returns it
//   kgweave.headScore(t, r, h)  the score PredictLinks ranks heads by (reciprocal relation)
//   kgweave.tailQuery(h, r)     a vector whose nearest `__SEARCH__` vectors (euclidean index)
//   kgweave.headQuery(t, r)     are the best tails / heads: db.idx.vector.queryNodes(...)
//
// h, t: entity nodes (or their vectors); r: a relation node. Higher scores are more plausible.

function kgwVector(x, property) {
    if (x === null || x === undefined) { throw new Error('kgweave: a node or vector is null'); }
    const v = (x.attributes !== undefined) ? x.attributes[property] : x;
    if (!Array.isArray(v)) { throw new Error('kgweave: no ' + property + ' vector (write-back first)'); }
    return v;
}

function kgwRelation(r, inverse) {
    if (r === null || r === undefined || r.attributes === undefined) {
        throw new Error('kgweave: give a relation node (:__RELATION__)');
    }
    const a = r.attributes;
    return {
        model: a.model, p: a.p, norm: a.search_norm,
        v: inverse ? a.inverse_embedding : a.embedding,
    };
}

function kgwComplex(h, r) {
    const d = h.length / 2;
    const out = new Array(2 * d);
    for (let i = 0; i < d; i++) {
        out[i] = h[i] * r[i] - h[d + i] * r[d + i];
        out[d + i] = h[i] * r[d + i] + h[d + i] * r[i];
    }
    return out;
}

function kgwRotate(h, phases) {
    const d = h.length / 2;
    const out = new Array(2 * d);
    for (let i = 0; i < d; i++) {
        const c = Math.cos(phases[i]), s = Math.sin(phases[i]);
        out[i] = h[i] * c - h[d + i] * s;
        out[d + i] = h[i] * s + h[d + i] * c;
    }
    return out;
}

// the vector every tail is compared with: (h * r) for the bilinear models, h + r, rotated h
function kgwQuery(h, rel) {
    const r = rel.v;
    switch (rel.model) {
        case 'distmult': return h.map((x, i) => x * r[i]);
        case 'complex': return kgwComplex(h, r);
        case 'transe': return h.map((x, i) => x + r[i]);
        case 'rotate': return kgwRotate(h, r);
        default: throw new Error('kgweave: unknown model ' + rel.model);
    }
}

function kgwScore(hNode, r, tNode, inverse) {
    const rel = kgwRelation(r, inverse);
    const q = kgwQuery(kgwVector(hNode, '__EMBEDDING__'), rel);
    const t = kgwVector(tNode, '__EMBEDDING__');
    let s = 0;
    if (rel.model === 'distmult' || rel.model === 'complex') {
        for (let i = 0; i < q.length; i++) { s += q[i] * t[i]; }
        return s;
    }
    if (rel.model === 'transe') {
        for (let i = 0; i < q.length; i++) {
            const d = q[i] - t[i];
            s += rel.p === 1 ? Math.abs(d) : d * d;
        }
        return rel.p === 1 ? -s : -Math.sqrt(s);
    }
    const d = q.length / 2;  // rotate: sum of the complex moduli of q - t
    for (let i = 0; i < d; i++) {
        const re = q[i] - t[i], im = q[d + i] - t[d + i];
        s += Math.sqrt(re * re + im * im + 1e-9);
    }
    return -s;
}

function kgwSearch(node, r, inverse) {
    const rel = kgwRelation(r, inverse);
    const q = kgwQuery(kgwVector(node, '__EMBEDDING__'), rel);
    if (rel.model !== 'distmult' && rel.model !== 'complex') { return q; }
    // bilinear models: entities carry one extra coordinate that turns the inner product into
    // a euclidean distance (all lie on the sphere of radius `search_norm`); the query's is 0,
    // and it is scaled to that radius too (the ranking by q . t does not change, and float32
    // distances keep their precision whatever the size of h * r)
    let size = 0;
    for (let i = 0; i < q.length; i++) { size += q[i] * q[i]; }
    const scale = size > 0 ? rel.norm / Math.sqrt(size) : 0;
    return q.map((x) => x * scale).concat([0]);
}

function score(h, r, t) { return kgwScore(h, r, t, false); }
function headScore(t, r, h) { return kgwScore(t, r, h, true); }
function tailQuery(h, r) { return kgwSearch(h, r, false); }
function headQuery(t, r) { return kgwSearch(t, r, true); }

falkor.register('score', score);
falkor.register('headScore', headScore);
falkor.register('tailQuery', tailQuery);
falkor.register('headQuery', headQuery);
