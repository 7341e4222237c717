"""A built-in list of short common English words (3-7 letters, lower case)."""

from __future__ import annotations

WORDS: tuple[str, ...] = tuple(
    """
    able about above act add after again age ago air all almost alone along also always
    animal answer any apple area arm army around art ask away baby back bad ball bank base
    basket bear beauty bed begin behind bell best better big bird black blue boat body bone
    book born both bottle box boy bread break bright bring brother brown build burn busy buy
    cake call camera can candle car card care carry cat catch cause chair change cheap child
    city class clean clear clock close cloud coat cold colour come common cook cool copy corn
    corner cost count country cover cow cross cup cut dance dark day dear deep desk dinner
    doctor dog door down draw dream dress drink drive dry duck early earth east easy eat egg
    empty end enough even evening every eye face fact fall family far farm fast father feel
    few field fill find fine finger fire first fish five floor flower fly follow food foot
    forest forget four free fresh friend front fruit full game garden gate gift girl give
    glass gold good grass great green ground group grow hair half hand happy hard hat head
    hear heart heavy help high hill hold home honey horse hot hour house idea inside iron
    island job join juice jump just keep key kind king kitchen know lake lamp land large last
    late laugh leaf learn left leg letter light line lion list little live long look lost
    loud love low lunch make man many map market milk minute money month moon morning mother
    mouse mouth move music name near neck need never new next nice night noise north nose
    number ocean office old open orange other paper park party pen people pencil person piano
    picture pink plan plant play pocket point poor potato power queen quick quiet rain read
    ready red rice rich right river road rock roof room round run salt sand school sea season
    seat seed shape sheep ship shirt shoe short sing sister sky sleep slow small smile snow
    soft song soup south space speak spring square star station stone story street strong
    sugar summer sun table tail talk tall tea teacher ten thin three today tomato top town
    train tree truck turn two under use valley voice walk wall warm watch water week west
    wet white wind window winter wood word work world write yellow young zebra
    """.split()
)
