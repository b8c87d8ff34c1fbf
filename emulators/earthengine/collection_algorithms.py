"""Collection, element, list, dictionary, date, filter and reducer algorithms of the emulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulators.earthengine.evaluator import (
    Closure,
    Date,
    DateRange,
    EvaluationError,
    Evaluator,
    Filter,
    ImageCollection,
    Reducer,
    algorithm,
    as_image,
    as_millis,
    properties_of,
)
from emulators.earthengine.images import Image


@algorithm("ImageCollection.load")
def _collection_load(ev: Evaluator, id: str, version: Any = None) -> ImageCollection:
    try:
        sources, props = ev.catalog.collection(id)
    except KeyError:
        raise EvaluationError(
            f"ImageCollection.load: ImageCollection asset '{id}' not found "
            "(does not exist or caller does not have access)."
        ) from None
    return ImageCollection(
        [Image.from_source(s) for s in sources], dict(props), ev.catalog.canonical_id(id)
    )


@algorithm("ImageCollection.fromImages")
def _from_images(ev: Evaluator, images: list) -> ImageCollection:
    return ImageCollection([as_image(i) for i in images])


@algorithm("Collection.filter")
def _filter(ev: Evaluator, collection: ImageCollection, filter: Filter) -> ImageCollection:
    return collection.derive([i for i in collection.images if filter.test(_ElementView(i))])


@algorithm("Collection.size")
def _size(ev: Evaluator, collection: ImageCollection) -> int:
    return len(collection.images)


@algorithm("Collection.first")
def _first(ev: Evaluator, collection: ImageCollection) -> Image | None:
    return collection.images[0] if collection.images else None


@algorithm("Collection.toList")
def _to_list(ev: Evaluator, collection: ImageCollection, count: int, offset: int = 0) -> list:
    offset = int(offset or 0)
    return collection.images[offset : offset + int(count)]


@algorithm("Collection.limit")
def _limit(
    ev: Evaluator,
    collection: ImageCollection,
    limit: int | None = None,
    key: str | None = None,
    ascending: bool = True,
) -> ImageCollection:
    items = list(collection.images)
    if key is not None:  # sort() is limit() without a limit; images lacking the key go last
        present = [i for i in items if i.properties.get(key) is not None]
        missing = [i for i in items if i.properties.get(key) is None]
        items = (
            sorted(present, key=lambda i: i.properties[key], reverse=ascending is False) + missing
        )
    return collection.derive(items if limit is None else items[: int(limit)])


@algorithm("Collection.iterate")
def _iterate(
    ev: Evaluator, collection: ImageCollection, function: Closure, first: Any = None
) -> Any:
    acc = first
    for image in collection.images:
        acc = function(image, acc)
    return acc


@algorithm("Collection.map")
def _map(
    ev: Evaluator, collection: ImageCollection, baseAlgorithm: Closure, dropNulls: bool = False
):
    out = [baseAlgorithm(image) for image in collection.images]
    if any(o is None for o in out) and not dropNulls:
        raise EvaluationError("Collection.map: the mapped function returned null (use dropNulls).")
    return collection.derive([as_image(o) for o in out if o is not None])


@algorithm("Collection.reduceColumns")
def _reduce_columns(
    ev: Evaluator,
    collection: ImageCollection,
    reducer: Reducer,
    selectors: list,
    weightSelectors: Any = None,
) -> dict:
    if reducer.kind != "toList" or (reducer.inner and reducer.inner.kind != "toList"):
        raise EvaluationError(
            "reduceColumns: the emulator only implements Reducer.toList (optionally repeated)."
        )
    if reducer.count != len(selectors):
        raise EvaluationError(
            f"reduceColumns: reducer takes {reducer.count} inputs, got {len(selectors)} selectors."
        )
    rows = [[i.properties.get(s) for s in selectors] for i in collection.images]
    if reducer.inner is not None:  # each repeated toList drops its own null inputs
        return {"list": [[r[k] for r in rows if r[k] is not None] for k in range(len(selectors))]}
    required = len(selectors) - reducer.optional
    rows = [
        r for r in rows if all(v is not None for v in r[:required])
    ]  # incomplete tuples are dropped
    return {"list": rows if reducer.tupled else [r[0] for r in rows]}


@algorithm("AggregateFeatureCollection.array")
def _aggregate_array(ev: Evaluator, collection: ImageCollection, property: str) -> list:
    return [i.properties[property] for i in collection.images if property in i.properties]


@algorithm("Reducer.toList")
def _reducer_to_list(ev: Evaluator, tupleSize: int | None = None, numOptional: int = 0) -> Reducer:
    return Reducer(
        "toList", int(tupleSize or 1), optional=int(numOptional or 0), tupled=tupleSize is not None
    )


@algorithm("Reducer.repeat")
def _reducer_repeat(ev: Evaluator, reducer: Reducer, count: int) -> Reducer:
    return Reducer(reducer.kind, int(count), reducer)


@algorithm("Element.get")
def _element_get(ev: Evaluator, object: Any, property: str) -> Any:
    return properties_of(object).get(property)


@algorithm("Element.set")
def _element_set(ev: Evaluator, object: Any, key: str, value: Any = None) -> Any:
    return _element_set_multi(ev, object, {key: value})


@algorithm("Element.setMulti")
def _element_set_multi(ev: Evaluator, object: Any, properties: dict) -> Any:
    values = {k: (v.ms if isinstance(v, Date) else v) for k, v in properties.items()}
    if isinstance(object, Image):
        return Image(object.bands, {**object.properties, **values})
    if isinstance(object, ImageCollection):
        return ImageCollection(object.images, {**object.properties, **values}, object.collection_id)
    raise EvaluationError(f"Element.set: expected an Element, got {type(object).__name__}.")


@algorithm("Element.toDictionary")
def _element_to_dictionary(ev: Evaluator, element: Any, properties: list | None = None) -> dict:
    props = properties_of(element)
    if properties is None:
        return {k: v for k, v in props.items() if not k.startswith("system:")}
    return {k: props[k] for k in properties if k in props}


@algorithm("Element.propertyNames")
def _property_names(ev: Evaluator, element: Any) -> list:
    return list(properties_of(element))


@algorithm("Dictionary.get")
def _dictionary_get(ev: Evaluator, dictionary: dict, key: str, defaultValue: Any = None) -> Any:
    if key not in dictionary and defaultValue is None:
        raise EvaluationError(f"Dictionary.get: Dictionary does not contain key: '{key}'.")
    return dictionary.get(key, defaultValue)


@algorithm("List.slice")
def _list_slice(
    ev: Evaluator, list: list, start: int, end: int | None = None, step: int | None = None
):
    return list[
        int(start) : None if end is None else int(end) : None if step is None else int(step)
    ]


@algorithm("List.get")
def _list_get(ev: Evaluator, list: list, index: int) -> Any:
    return list[int(index)]


@algorithm("List.size")
def _list_size(ev: Evaluator, list: list) -> int:
    return len(list)


@algorithm("Date")
def _date(ev: Evaluator, value: Any, timeZone: str | None = None) -> Date:
    if timeZone not in (None, "UTC", "Etc/UTC"):
        raise EvaluationError("Date: the emulator only implements UTC.")
    return Date(as_millis(value))


@algorithm("Date.millis")
def _date_millis(ev: Evaluator, date: Date) -> int:
    return date.ms


@algorithm("DateRange")
def _date_range(
    ev: Evaluator, start: Any, end: Any = None, timeZone: str | None = None
) -> DateRange:
    if timeZone not in (None, "UTC", "Etc/UTC"):
        raise EvaluationError("DateRange: the emulator only implements UTC.")
    begin = as_millis(start)
    return DateRange(begin, begin + 1 if end is None else as_millis(end))


@algorithm("Filter.dateRangeContains")
def _filter_date_range(
    ev: Evaluator, leftField=None, rightValue=None, rightField=None, leftValue=None
):
    if not isinstance(leftValue, DateRange) or rightField is None:
        raise EvaluationError(
            "Filter.dateRangeContains: the emulator implements leftValue=DateRange, rightField."
        )

    def test(props: dict) -> bool:
        t = props.get(rightField)
        return t is not None and leftValue.start <= as_millis(t) < leftValue.end

    return Filter(test)


def _field_filter(name: str, predicate: Callable[[Any, Any], bool]) -> Callable:
    def make(ev: Evaluator, leftField=None, rightValue=None, rightField=None, leftValue=None):
        if leftField is not None and rightField is None:
            return Filter(lambda p: leftField in p and predicate(p[leftField], rightValue))
        if rightField is not None and leftField is None:
            return Filter(lambda p: rightField in p and predicate(leftValue, p[rightField]))
        raise EvaluationError(f"{name}: the emulator implements one field compared to one value.")

    return algorithm(name)(make)


_field_filter("Filter.equals", lambda a, b: a == b)
_field_filter("Filter.notEquals", lambda a, b: a != b)
_field_filter("Filter.inList", lambda a, b: a in b)


@algorithm("Filter.and")
def _filter_and(ev: Evaluator, filters: list) -> Filter:
    return Filter(lambda p: all(f.test(p) for f in filters))


@algorithm("Filter.or")
def _filter_or(ev: Evaluator, filters: list) -> Filter:
    return Filter(lambda p: any(f.test(p) for f in filters))


@algorithm("Filter.not")
def _filter_not(ev: Evaluator, filter: Filter) -> Filter:
    return Filter(lambda p: not filter.test(p))


# ---- geometry: enough for filterBounds (Filter.intersects on an element's footprint, planar lon/lat)


class Feature:
    def __init__(self, geometry: Any, properties: dict | None = None):
        self.geometry, self.properties = geometry, dict(properties or {})


def _lonlat(name: str, crs: Any) -> None:
    if crs not in (None, "EPSG:4326"):
        raise EvaluationError(
            f"{name}: the emulator only implements lon/lat (EPSG:4326) geometries."
        )


@algorithm("GeometryConstructors.Polygon")
def _polygon(
    ev: Evaluator,
    coordinates: list,
    crs: Any = None,
    geodesic: Any = None,
    maxError: Any = None,
    evenOdd: Any = None,
):
    import shapely

    _lonlat("GeometryConstructors.Polygon", crs)
    return shapely.Polygon(coordinates[0], coordinates[1:])


@algorithm("GeometryConstructors.MultiPolygon")
def _multipolygon(
    ev: Evaluator,
    coordinates: list,
    crs: Any = None,
    geodesic: Any = None,
    maxError: Any = None,
    evenOdd: Any = None,
):
    import shapely

    _lonlat("GeometryConstructors.MultiPolygon", crs)
    return shapely.MultiPolygon([shapely.Polygon(p[0], p[1:]) for p in coordinates])


@algorithm("GeometryConstructors.Rectangle")
def _rectangle(
    ev: Evaluator, coordinates: list, crs: Any = None, geodesic: Any = None, evenOdd: Any = None
):
    import shapely

    _lonlat("GeometryConstructors.Rectangle", crs)
    flat = [float(v) for pair in coordinates for v in (pair if isinstance(pair, list) else [pair])]
    return shapely.box(*flat)


@algorithm("Feature")
def _feature(ev: Evaluator, geometry: Any = None, metadata: dict | None = None) -> Feature:
    return Feature(geometry, metadata)


class _ElementView(dict):
    """An image's properties, plus its footprint under '.geo' (computed only when a filter asks)."""

    def __init__(self, image: Image):
        super().__init__(image.properties)
        self._image = image

    def __missing__(self, key: str) -> Any:
        if key != ".geo":
            raise KeyError(key)
        import shapely

        sources = {id(b.source): b.source for b in self._image.bands}
        if not sources or None in sources.values():
            return None  # a computed band (e.g. a constant) is unbounded, as in Earth Engine
        return shapely.union_all([shapely.Polygon(s.footprint_lonlat) for s in sources.values()])


@algorithm("Filter.intersects")
def _filter_intersects(
    ev: Evaluator,
    leftField: Any = None,
    rightValue: Any = None,
    rightField: Any = None,
    leftValue: Any = None,
    maxError: Any = None,
) -> Filter:
    import shapely

    if leftField not in (".all", ".geo") or rightValue is None:
        raise EvaluationError(
            "Filter.intersects: the emulator implements leftField='.all'/'.geo' and a rightValue geometry."
        )
    region = rightValue.geometry if isinstance(rightValue, Feature) else rightValue
    if not isinstance(region, shapely.Geometry):
        raise EvaluationError(
            f"Filter.intersects: expected a Geometry or Feature, got {type(rightValue).__name__}."
        )

    def test(props: dict) -> bool:
        footprint = props[".geo"] if isinstance(props, _ElementView) else None
        return footprint is None or footprint.intersects(region)

    return Filter(test)
