// Generated from app/urls.py PATTERNS (tests/app/test_urls.py keeps them equal); edit there, not here.
export const PATTERNS = {
  "home": "/",
  "sae": "/sae/{sae_id}",
  "dashboard": "/sae/{sae_id}/dashboard",
  "game": "/sae/{sae_id}/game",
  "game_answer": "/sae/{sae_id}/game/answer",
  "search": "/sae/{sae_id}/search",
  "feature": "/sae/{sae_id}/feature/{feature_id}",
  "feature_json": "/sae/{sae_id}/feature/{feature_id}.json",
  "feature_card": "/sae/{sae_id}/feature/{feature_id}/card.json",
  "feature_random": "/sae/{sae_id}/feature/random",
  "features_json": "/sae/{sae_id}/features.json",
  "sample": "/sae/{sae_id}/sample/{sample_id}",
  "sample_json": "/sae/{sae_id}/sample/{sample_id}.json",
  "thumb": "/thumb/{dataset_id}/{sample_id}.webp",
  "points": "/sae/{sae_id}/points/{kind}.bin",
  "activations": "/sae/{sae_id}/feature/{feature_id}/activations.bin",
  "features": "/sae/{sae_id}/features",
  "inspect": "/sae/{sae_id}/inspect",
  "inspect_json": "/sae/{sae_id}/inspect.json",
  "steer_json": "/sae/{sae_id}/steer.json",
  "global_search": "/search"
};
